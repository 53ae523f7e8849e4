"""Benchmark: this tree against another revision, both at once, CPU per request.

On a shared VM the machine's speed drifts by a quarter between runs a minute apart, so two
runs of ``http_proxy.py``, one per revision, cannot show a change of a few percent. Here both
revisions run at the same time, each ``shadowproxy serve --workers 1`` (or ``--workers N``)
behind the same nginx upstream, each under its own paced wrk at the same rate: whatever the
machine does, it does to both. What is compared is the CPU time each proxy (its processes)
used per request (``/proc``), not its throughput, and next to it each one's p99 latency at
that rate (wrk's ``--latency``): the two share the machine, so a stall one of them has and
the other has not shows.

- ``--base REV`` (default ``HEAD``) is checked out into a temporary git worktree and run with
  this virtualenv, ``PYTHONPATH`` pointing at the worktree. "this tree" is the working tree,
  uncommitted changes included.
- ``--control`` runs this tree against itself: the ratio it prints is the instrument's own
  bias, to read the real ratio against.
- The order in which the two wrk start alternates every round; round 0 warms up and is not
  counted.
- ``--phase store-shadow0`` and ``store-shadow100`` measure store mode instead: both proxies
  serve ``GET /users/{id}`` of one seeded user (``store_proxy.py``'s config, tables and
  DynamoDB emulator; PostgreSQL is this machine's), with no shadow or every read shadowed,
  at 450 (store-shadow0) or 250 (store-shadow100) requests/s each unless ``--rate`` says.

Example: ``.venv/bin/python tests/benchmarks/side_by_side.py --base HEAD~1 --phase
proxy-mismatch --rounds 5``. Needs ``wrk``, ``nginx`` and ``git``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import http_proxy as hp
import store_proxy as sp
import yaml
from benchlib import (
    REPO,
    BenchError,
    Processes,
    cpu_model,
    cpu_seconds,
    free_ports,
    guarded,
)

PHASES = ("proxy", "proxy-shadow", "proxy-mismatch", "store-shadow0", "store-shadow100")
STORE_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
# A shadowed store read costs about twice an HTTP one; store-shadow0's rounds moved by +-6% at
# 250 requests/s each and by +-1.5% at 450.
STORE_RATES = {"store-shadow0": 450.0, "store-shadow100": 250.0}
# Both proxies share one core, nginx and both wrk the other: each proxy sees the same core,
# the same neighbours and the same caches. Unpinned, the two proxies' CPU per request differed
# by 3-6% running the same tree, depending on where the scheduler put them.
SUT_CPU, LOAD_CPU = "1", "0"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="HEAD", help="the revision to compare against (HEAD)")
    p.add_argument("--control", action="store_true", help="this tree against itself")
    p.add_argument("--phase", choices=PHASES, default="proxy-shadow", help="(proxy-shadow)")
    p.add_argument(
        "--rate",
        type=float,
        help="requests/s to each (700; store-shadow0 450, store-shadow100 250)",
    )
    p.add_argument("--duration", type=int, default=10, help="seconds per round (10)")
    p.add_argument("--rounds", type=int, default=4, help="counted rounds (4)")
    p.add_argument("--connections", type=int, default=16, help="wrk connections each (16)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes of each proxy (1); 2 or more run prometheus-client's "
        "multiprocess mode, as `serve --workers` does",
    )
    args = p.parse_args(argv)
    if args.rate is None:  # both proxies must fit in one core, at the highest rate that does
        args.rate = STORE_RATES.get(args.phase, 700.0)
    if args.rate <= 0 or args.duration < 1 or args.rounds < 1 or args.connections < 1:
        p.error("--rate, --duration, --rounds and --connections must be positive")
    return args


def worktree(rev: str, tmp: Path) -> Path:
    where = tmp / "base-tree"
    done = subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(where), rev],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"git worktree add {rev}: {done.stderr.strip()}")
    return where


def imported_from(path: Path) -> None:
    """Fail unless ``PYTHONPATH=path`` really makes the proxy come from ``path``."""
    env = dict(os.environ, PYTHONPATH=str(path))
    got = subprocess.run(
        [sys.executable, "-c", "import proxy; print(proxy.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=path.parent,  # not the repository: `-c` puts the working directory first
        check=False,
    ).stdout.strip()
    if not got.startswith(str(path)):
        raise BenchError(f"PYTHONPATH={path} imports the proxy from {got or 'nowhere'}")


def requests_done(wrk_output: str) -> int:
    for line in wrk_output.splitlines():
        if "requests in" in line:
            return int(line.split()[0])
    raise BenchError(f"no request count in wrk's output:\n{wrk_output}")


def p99_ms(wrk_output: str) -> float:
    """The 99th percentile latency of wrk's ``--latency`` distribution, in ms."""
    units = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}
    for line in wrk_output.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == "99%":
            value = fields[1]
            unit = value.lstrip("0123456789.")
            return float(value[: len(value) - len(unit)]) * units[unit]
    raise BenchError(f"no 99% latency in wrk's output:\n{wrk_output}")


@dataclasses.dataclass(frozen=True)
class Round:
    """One measured round: CPU µs per request and p99 ms, this tree's and the base's."""

    this: float
    base: float
    this_p99: float
    base_p99: float


Systems = dict[str, tuple[int, str]]  # "this"/"base" -> (proxy pid, URL to load)


def start_proxy(
    config: Path, path: Path, admin: int, procs: Processes, name: str, workers: int
) -> int:
    """``shadowproxy serve --workers N`` of the tree at ``path``, pinned to ``SUT_CPU``."""
    os.environ["PYTHONPATH"] = str(path)
    try:
        ports = hp.Ports(0, 0, 0, 0, 0, admin)  # start_shadowproxy waits on the admin port
        return hp.start_shadowproxy(
            config, workers, ports, procs, SUT_CPU, f"shadowproxy-{name}"
        ).pid
    finally:
        del os.environ["PYTHONPATH"]


def http_systems(
    args: argparse.Namespace, trees: dict[str, Path], tmp: Path, procs: Processes
) -> Systems:
    upstream_args = hp.parse_args(
        ["--workers", "1", "--upstream-workers", "1", "--upstream-cpus", LOAD_CPU]
    )
    ports = hp.Ports.pick()
    hp.start_upstream(upstream_args, ports, tmp, procs)
    systems: Systems = {}
    for name, path in trees.items():
        listen, admin = free_ports(2)
        mine = hp.Ports(ports.primary, ports.shadow, ports.status, ports.mirror, listen, admin)
        folder = tmp / name
        folder.mkdir()
        config = hp.proxy_config(
            folder, mine, shadow=args.phase != "proxy", mismatch=args.phase == "proxy-mismatch"
        )
        pid = start_proxy(config, path, admin, procs, name, args.workers)
        systems[name] = (pid, f"http://127.0.0.1:{listen}{hp.REQUEST_PATH}")
    return systems


def store_env(tmp: Path, procs: Processes) -> sp.Env:
    """The DynamoDB emulator (pinned with the load) and a table name for both proxies; the
    proxies' ports and folders are filled in per tree (``store_systems``)."""
    emulator, _ = sp.default_emulator()
    (dynamodb_port,) = free_ports(1)
    url = sp.start_dynamodb(emulator, dynamodb_port, procs)
    pid = procs.running()[sp.DYNAMODB]
    subprocess.run(["taskset", "-a", "-pc", LOAD_CPU, str(pid)], capture_output=True, check=True)
    return sp.Env(
        tmp=tmp, dsn=STORE_DSN, sut_dsn=STORE_DSN, table=f"shadowproxy_sbs_{os.getpid()}",
        dynamodb_url=url, proxy_port=0, admin_port=0, baseline_port=0, ids_file=tmp / "ids",
        sample_id="", get_sql="", pool_max=10,
    )  # fmt: skip


def store_systems(
    args: argparse.Namespace, trees: dict[str, Path], env: sp.Env, procs: Processes
) -> Systems:
    """Both proxies on one table, seeded once."""
    (key, *_) = asyncio.run(sp.setup_stores(env, 200))
    os.environ.setdefault("SHADOWPROXY_REDACTION_KEY", "side-by-side")
    systems: Systems = {}
    for name, path in trees.items():
        listen, admin = free_ports(2)
        folder = env.tmp / name
        folder.mkdir()
        mine = dataclasses.replace(env, tmp=folder, proxy_port=listen, admin_port=admin)
        config = folder / "proxy.yaml"
        raw = sp.phase_config(mine, args.phase.removeprefix("store-"))
        config.write_text(yaml.safe_dump(raw, sort_keys=False))
        sp.check_isolated(config)
        pid = start_proxy(config, path, admin, procs, name, args.workers)
        systems[name] = (pid, f"http://127.0.0.1:{listen}/users/{key}")
    return systems


def run(args: argparse.Namespace, tmp: Path, procs: Processes) -> list[Round]:
    base = REPO if args.control else worktree(args.base, tmp)
    imported_from(base)
    trees = {"this": REPO, "base": base}
    if not args.phase.startswith("store-"):
        return measure(args, http_systems(args, trees, tmp, procs), tmp)
    env = store_env(tmp, procs)
    try:  # the tables go also when a proxy fails to start
        return measure(args, store_systems(args, trees, env, procs), tmp)
    finally:
        procs.stop_all(keep=(sp.DYNAMODB,))  # the proxies hold pool connections
        for line in asyncio.run(sp.drop_tables(env.dsn, env.table, env.dynamodb_url)):
            print(f"  {line}")


def measure(args: argparse.Namespace, systems: Systems, tmp: Path) -> list[Round]:
    """Paced wrk at both at once, every round: CPU µs per request and p99 ms of each."""
    script = tmp / "paced.lua"
    script.write_text((hp.WRK_SCRIPTS / "paced.lua").read_text())
    env = dict(os.environ, BENCH_RATE=str(args.rate), BENCH_THREADS="1")
    results: list[Round] = []
    for round_ in range(args.rounds + 1):
        order = ("this", "base") if round_ % 2 else ("base", "this")
        before = {name: cpu_seconds(pid) for name, (pid, _) in systems.items()}
        loads = {
            name: subprocess.Popen(
                [
                    "taskset",
                    "-c",
                    LOAD_CPU,
                    "wrk",
                    "-t1",
                    f"-c{args.connections}",
                    f"-d{args.duration}s",
                    "--latency",
                    "-s",
                    str(script),
                    systems[name][1],
                ],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            for name in order
        }
        per_request, p99 = {}, {}
        for name, load in loads.items():
            out = load.communicate()[0]
            used = cpu_seconds(systems[name][0]) - before[name]
            per_request[name] = 1e6 * used / requests_done(out)
            p99[name] = p99_ms(out)
        if round_ == 0:
            continue
        results.append(Round(per_request["this"], per_request["base"], p99["this"], p99["base"]))
        r = results[-1]
        print(
            f"round {round_}: this {r.this:.0f} µs/req, base {r.base:.0f}, "
            f"{r.this / r.base:.3f}x; p99 this {r.this_p99:.2f} ms, base {r.base_p99:.2f} ms"
        )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="shadowproxy-sbs-"))
    tmp.chmod(0o755)  # nginx workers drop root privileges to `nobody`
    procs = Processes(tmp)
    try:
        with guarded(procs):
            results = run(args, tmp, procs)
    finally:
        if (tmp / "base-tree").exists():
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmp / "base-tree")],
                capture_output=True,
                check=False,
            )
        shutil.rmtree(tmp, ignore_errors=True)
    against = "this tree (control)" if args.control else args.base
    ratios = [r.this / r.base for r in results]
    print(
        f"\n{args.phase} at {args.rate:g} requests/s each, {args.rounds} rounds of "
        f"{args.duration} s; {os.cpu_count()} CPUs ({cpu_model()}), Python "
        f"{platform.python_version()}\n"
    )
    print("| tree | CPU µs/request (median) | p99 ms (median) |\n|---|---:|---:|")
    print(
        f"| this tree | {statistics.median(r.this for r in results):.0f} "
        f"| {statistics.median(r.this_p99 for r in results):.2f} |"
    )
    print(
        f"| {against} | {statistics.median(r.base for r in results):.0f} "
        f"| {statistics.median(r.base_p99 for r in results):.2f} |"
    )
    print(f"\nthis / base: {statistics.median(ratios):.3f}x (per round: "
          + ", ".join(f"{r:.3f}" for r in ratios) + ")")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
