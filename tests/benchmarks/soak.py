"""A bounded soak: ``shadowproxy serve`` for ten minutes at a steady rate, 100% of requests
shadowed, 10% of them mismatching, and a shadow that keeps going down and coming back.

What it shows: the proxy's resident memory, open file descriptors and event loop tasks stay
flat, and no client ever sees an error or a wrong answer, however the shadow behaves.

    .venv/bin/python tests/benchmarks/soak.py                  # 600 s at 200 requests/s
    .venv/bin/python tests/benchmarks/soak.py --duration 120   # a shorter look

Every request is checked: status 200 and exactly the primary's body. Every ``--sample``
seconds the script reads the proxy's ``/proc/<pid>/status`` (VmRSS), counts
``/proc/<pid>/fd`` and scrapes ``shadowproxy_event_loop_tasks`` and the comparison outcomes
from the admin port. The shadow (its own process) is SIGKILLed every ``--flap-every``
seconds and started again ``--down-for`` seconds later on the same port. The first minute
is warm-up (pools fill, caches settle); "flat" compares the last third of the rest with
the first. Exit 0 when nothing failed and nothing grew past the printed bounds, 1
otherwise. Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web
from benchlib import (
    Processes,
    cpu_model,
    free_ports,
    shadowproxy_command,
    terminate_on_sigterm,
    wait_ready,
)

MISMATCH_EVERY = 10  # ids divisible by this answer differently on the shadow: 10%
USERS = 1000
# "Flat" (see report()): the last third of the run after warm-up within these bounds of the
# first third.
RSS_GROWTH = 0.15  # of the baseline
FDS_GROWTH = 16
TASKS_GROWTH = 64
ME = [sys.executable, str(Path(__file__).resolve())]  # this script, as an upstream


def answer(user: int, variant: str) -> bytes:
    name = f"user {user}"
    if variant == "shadow" and user % MISMATCH_EVERY == 0:
        name = f"User {user}"  # the planted difference
    body = {"id": user, "name": name, "email": f"u{user}@example.com", "tags": ["a", "b"]}
    return web.json_response(body).body  # type: ignore[return-value]


def serve_upstream(port: int, variant: str) -> None:
    """The primary or the shadow: ``GET /users/<n>`` answers user n's JSON."""

    async def handle(request: web.Request) -> web.Response:
        match = re.fullmatch(r"/users/(\d+)", request.path)
        if match is None:
            return web.Response(status=404)
        return web.Response(
            body=answer(int(match.group(1)), variant), content_type="application/json"
        )

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


@dataclass
class Sample:
    at: float
    rss_kib: int
    fds: int
    tasks: int
    outcomes: dict[str, float]


@dataclass
class Load:
    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def scrape(http: aiohttp.ClientSession, admin: str) -> tuple[int, dict[str, float]]:
    async with http.get(admin + "/metrics") as r:
        text = await r.text()
    tasks = 0
    outcomes: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("shadowproxy_event_loop_tasks "):
            tasks = int(float(line.split()[1]))
        elif line.startswith("shadowproxy_comparisons_total{"):
            found = re.search(r'outcome="([a-z_]+)"', line)
            if found:
                outcomes[found.group(1)] = outcomes.get(found.group(1), 0) + float(line.split()[-1])
    return tasks, outcomes


async def drive(url: str, rate: float, until: float, load: Load) -> None:
    """``rate`` requests/s on a fixed schedule (never closed-loop: a slow answer does not
    slow the offered load), each checked against the primary's answer."""
    connector = aiohttp.TCPConnector(limit=64)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        pending: set[asyncio.Task[None]] = set()

        async def one(user: int) -> None:
            try:
                async with http.get(f"{url}/users/{user}") as r:
                    body = await r.read()
                    if r.status != 200:
                        load.error(f"status {r.status}")
                    elif body != answer(user, "primary"):
                        load.error("wrong body")
                    else:
                        load.ok += 1
            except (aiohttp.ClientError, TimeoutError) as e:
                load.error(type(e).__name__)

        start = time.monotonic()
        while (now := time.monotonic()) < until:
            due = int((now - start) * rate)
            while load.sent < due:
                load.sent += 1
                task = asyncio.ensure_future(one(load.sent % USERS))
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.sleep(0.005)
        if pending:
            await asyncio.wait(pending, timeout=15)


async def flap(procs: Processes, start_shadow: Any, every: float, down: float, until: float) -> int:
    flaps = 0
    shadow = start_shadow()
    try:
        while time.monotonic() + every < until:
            await asyncio.sleep(every)
            shadow.send_signal(signal.SIGKILL)
            shadow.wait(10)
            procs.stop(shadow)
            flaps += 1
            await asyncio.sleep(down)
            shadow = start_shadow()
    finally:
        procs.stop(shadow)
    return flaps


async def watch(pid: int, admin: str, every: float, until: float, samples: list[Sample]) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        start = time.monotonic()
        while time.monotonic() < until:
            tasks, outcomes = await scrape(http, admin)
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            samples.append(Sample(time.monotonic() - start, rss_kib(pid), fds, tasks, outcomes))
            await asyncio.sleep(every)


def machine() -> str:
    cpu = cpu_model()
    return f"{os.cpu_count()} CPUs, {cpu}; Python {platform.python_version()}"


def thirds(samples: list[Sample]) -> list[list[Sample]]:
    n = len(samples)
    return [samples[i * n // 3 : (i + 1) * n // 3] or samples for i in range(3)]


def report(samples: list[Sample], load: Load, flaps: int, args: argparse.Namespace) -> bool:
    """Flat means no trend: the last third of the run after warm-up holds no more than the
    first third did. Each third spans several of the shadow's down-and-up cycles, and
    descriptors and tasks move with the connections open at the moment of a sample, so the
    highest value of each third is compared (memory by its median)."""
    after = [s for s in samples if s.at >= args.warmup] or samples
    first, middle, last = thirds(after)
    outcomes = samples[-1].outcomes
    compared = sum(outcomes.get(o, 0) for o in ("match", "mismatch", "transient"))
    print(f"\n== Soak ({machine()}; shadowproxy {args.workers} worker)\n")
    print(f"{args.duration:.0f} s at {args.rate:.0f} requests/s, 100% shadowed, "
          f"1 in {MISMATCH_EVERY} mismatching; the shadow killed {flaps} times "
          f"({args.down_for:.0f} s down every {args.flap_every:.0f} s); "
          f"{len(after)} samples after {args.warmup:.0f} s of warm-up\n")  # fmt: skip
    print(
        "| third of the run | resident MiB, median (max) | open fds, max | event loop tasks, max |"
    )
    print("|---|---:|---:|---:|")

    def mib(part: list[Sample]) -> float:
        return statistics.median(s.rss_kib for s in part) / 1024

    for name, part in (("first", first), ("middle", middle), ("last", last)):
        print(f"| {name} | {mib(part):.1f} ({max(s.rss_kib for s in part) / 1024:.1f}) "
              f"| {max(s.fds for s in part)} | {max(s.tasks for s in part)} |")  # fmt: skip
    print()
    errors = sum(load.errors.values())
    print(f"requests sent {load.sent:,}, answered 200 with the primary's body {load.ok:,}, "
          f"client errors {errors:,} {load.errors or ''}")  # fmt: skip
    print("comparisons: " + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(outcomes.items())))
    if compared:
        print(f"mismatch share of compared: {outcomes.get('mismatch', 0) / compared:.1%}")
    checks = {
        "no client error": errors == 0 and load.ok == load.sent,
        f"memory: last third within {RSS_GROWTH:.0%} of the first": (
            mib(last) <= mib(first) * (1 + RSS_GROWTH)
        ),
        f"descriptors: last third within {FDS_GROWTH} of the first": (
            max(s.fds for s in last) <= max(s.fds for s in first) + FDS_GROWTH
        ),
        f"tasks: last third within {TASKS_GROWTH} of the first": (
            max(s.tasks for s in last) <= max(s.tasks for s in first) + TASKS_GROWTH
        ),
    }
    print()
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    return all(checks.values())


def config(ports: dict[str, int], sink: Path) -> dict[str, Any]:
    return {
        "listen": {"port": ports["proxy"]},
        "admin": {"port": ports["admin"]},
        "logging": {"access_log": False, "level": "WARNING"},
        "backends": {
            "primary": {"kind": "http", "url": f"http://127.0.0.1:{ports['primary']}"},
            "shadow": {
                "kind": "http",
                "url": f"http://127.0.0.1:{ports['shadow']}",
                "timeout_seconds": 1,
                "connect_timeout_seconds": 0.5,
            },
        },
        "routes": [
            {
                "name": "users",
                "path": "/users/{id}",
                "methods": ["GET"],
                "primary": "primary",
                "shadow": "shadow",
                "sample": 1.0,
            },
        ],
        "sink": {"kind": "jsonl", "path": str(sink)},
    }


async def soak(args: argparse.Namespace, procs: Processes, tmp: Path) -> bool:
    names = ("proxy", "admin", "primary", "shadow")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    primary = procs.start("primary", [*ME, "--serve-upstream", str(ports["primary"]), "primary"])
    wait_ready(
        f"http://127.0.0.1:{ports['primary']}/users/1", primary, 20, "primary", procs, "primary"
    )

    def start_shadow() -> subprocess.Popen[bytes]:
        proc = procs.start("shadow", [*ME, "--serve-upstream", str(ports["shadow"]), "shadow"])
        wait_ready(
            f"http://127.0.0.1:{ports['shadow']}/users/1", proc, 20, "shadow", procs, "shadow"
        )
        return proc

    cfg = tmp / "soak.yaml"
    cfg.write_text(yaml.safe_dump(config(ports, tmp / "mismatches.jsonl")))
    proxy = procs.start(
        "shadowproxy",
        [*shadowproxy_command(), "serve", "-c", str(cfg), "--workers", str(args.workers)],
    )
    admin = f"http://127.0.0.1:{ports['admin']}"
    wait_ready(admin + "/healthz", proxy, 30, "shadowproxy", procs, "shadowproxy")
    pid = proxy.pid
    if args.workers > 1:
        raise SystemExit("--workers > 1 is not supported: the samples read one process")
    until = time.monotonic() + args.duration
    load = Load()
    samples: list[Sample] = []
    _, flaps, _ = await asyncio.gather(
        drive(f"http://127.0.0.1:{ports['proxy']}", args.rate, until, load),
        flap(procs, start_shadow, args.flap_every, args.down_for, until),
        watch(pid, admin, args.sample, until, samples),
    )
    return report(samples, load, flaps, args)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=600, help="seconds of load (default 600)")
    parser.add_argument("--rate", type=float, default=200, help="requests per second (default 200)")
    parser.add_argument(
        "--warmup", type=float, default=60, help="seconds before 'flat' is judged (default 60)"
    )
    parser.add_argument(
        "--sample", type=float, default=10, help="seconds between samples (default 10)"
    )
    parser.add_argument(
        "--flap-every", type=float, default=30, help="seconds between shadow kills (default 30)"
    )
    parser.add_argument(
        "--down-for", type=float, default=10, help="seconds the shadow stays down (default 10)"
    )
    parser.add_argument("--workers", type=int, default=1, help="shadowproxy workers (default 1)")
    parser.add_argument(
        "--serve-upstream", nargs=2, metavar=("PORT", "VARIANT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream(int(args.serve_upstream[0]), args.serve_upstream[1])
        return 0
    if args.duration <= args.warmup:
        parser.error(f"--duration ({args.duration}) must be longer than --warmup ({args.warmup})")
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp, terminate_on_sigterm():
        procs = Processes(Path(tmp))
        try:
            return 0 if asyncio.run(soak(args, procs, Path(tmp))) else 1
        finally:
            procs.stop_all()


if __name__ == "__main__":
    sys.exit(main())
