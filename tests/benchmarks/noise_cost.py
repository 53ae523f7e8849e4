"""What a noise backend costs the proxy (docs/noise.md): the same route, the same load, with
and without a noise twin, in one run.

    .venv/bin/python tests/benchmarks/noise_cost.py --seconds 5 --connections 16

Three upstreams (primary, shadow, noise twin; aiohttp, one child process) answer a small JSON
user with a random ``request_id`` and a timestamp, so every comparison walks a diff and the
twin's differences are learned. One ``shadowproxy serve`` per phase (``--workers 1``):

- ``shadow``: the route shadows every request (``sample: 1.0``), no noise backend;
- ``noise-0.1``: the same plus ``noise: {sample: 0.1}`` (the default share);
- ``noise-1.0``: every shadowed request also to the twin (the worst case).

A closed loop of ``--connections`` aiohttp clients (in this process) drives each phase for
``--seconds`` after a warm-up. Printed per phase: requests per second, the proxy process's
CPU (user + system, from /proc) per request, the comparisons and noise comparisons the
proxy counted, and the machine. The load generator and the upstreams share the machine with
the proxy: the figures compare the phases with each other, they are not a capacity figure
(tests/benchmarks/http_proxy.py is, with wrk and nginx).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from benchlib import (
    REPO,
    Processes,
    cpu_model,
    cpu_seconds,
    free_ports,
    http_get,
    shadowproxy_command,
    wait_ready,
)

PHASES: tuple[tuple[str, float | None], ...] = (
    ("shadow", None),
    ("noise-0.1", 0.1),
    ("noise-1.0", 1.0),
)


def serve_upstreams(ports: Sequence[int]) -> None:
    """Child process: one aiohttp server per port answering a stamped JSON user."""
    import uuid

    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        key = request.path.rsplit("/", 1)[-1]
        body = {
            "id": key,
            "name": "Ada Lovelace",
            "email": f"user{key}@example.com",
            "roles": ["admin", "analyst"],
            "request_id": str(uuid.uuid4()),
            "served_at": time.time_ns(),
        }
        return web.json_response(body)

    async def main() -> None:
        for port in ports:
            runner = web.ServerRunner(web.Server(handler), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    asyncio.run(main())


def config(tmp: Path, ports: dict[str, int], noise: float | None) -> Path:
    route: dict[str, Any] = {
        "name": "users",
        "path": "/users/{id}",
        "primary": "primary",
        "shadow": "shadow",
        "sample": 1.0,
    }
    if noise is not None:
        route["noise"] = {"backend": "twin", "sample": noise, "min_samples": 20}
    raw = {
        "listen": {"port": ports["proxy"]},
        "admin": {"port": ports["admin"]},
        "logging": {"access_log": False, "level": "WARNING"},
        "backends": {
            name: {"kind": "http", "url": f"http://127.0.0.1:{ports[name]}"}
            for name in ("primary", "shadow", "twin")
        },
        "routes": [route],
        "sink": {"kind": "jsonl", "path": str(tmp / "mismatches.jsonl"), "backups": 0},
        "flags": {"kind": "memory", "audit_path": str(tmp / "audit.jsonl")},
    }
    path = tmp / f"noise-{noise}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


async def load(url: str, connections: int, seconds: float) -> tuple[int, int]:
    """(answers, errors) of a closed loop of ``connections`` clients for ``seconds``."""
    deadline = time.monotonic() + seconds
    counts = [0, 0]

    async def client(session: aiohttp.ClientSession, n: int) -> None:
        i = n
        while time.monotonic() < deadline:
            i += connections
            try:
                async with session.get(f"{url}/users/{i % 1000}") as r:
                    await r.read()
                    counts[0 if r.status == 200 else 1] += 1
            except aiohttp.ClientError:
                counts[1] += 1

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session, n) for n in range(connections)))
    return counts[0], counts[1]


def counters(admin: str) -> dict[str, float]:
    text = http_get(f"{admin}/metrics", timeout=10)[1].decode()
    out: dict[str, float] = {}
    for name in ("shadowproxy_comparisons_total", "shadowproxy_noise_comparisons_total"):
        for line in text.splitlines():
            if line.startswith(name + "{"):
                label = re.search(r'\b(outcome|result)="([^"]+)"', line)
                if label:
                    key = f"{name.removeprefix('shadowproxy_').removesuffix('_total')}:{label[2]}"
                    out[key] = out.get(key, 0.0) + float(line.rsplit(None, 1)[1])
    return out


def machine() -> dict[str, Any]:
    cpu = cpu_model()
    commit = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "git_commit": commit + " (plus uncommitted changes)" if commit != "?" else commit,
    }


def run_phase(
    name: str, noise: float | None, ports: dict[str, int], tmp: Path, procs: Processes,
    args: argparse.Namespace,
) -> dict[str, Any]:  # fmt: skip
    cfg = config(tmp, ports, noise)
    env = {**os.environ, "SHADOWPROXY_ADMIN_TOKEN": "bench"}
    proc = procs.start(f"proxy-{name}", [*shadowproxy_command(), "serve", "-c", str(cfg)], env=env)
    admin = f"http://127.0.0.1:{ports['admin']}"
    url = f"http://127.0.0.1:{ports['proxy']}"
    try:
        wait_ready(f"{admin}/healthz", proc, 30, "shadowproxy", procs, f"proxy-{name}")
        asyncio.run(load(url, args.connections, args.warmup))
        time.sleep(0.5)  # let the warm-up's shadow jobs finish
        before, cpu0, t0 = counters(admin), cpu_seconds(proc.pid), time.monotonic()
        answered, errors = asyncio.run(load(url, args.connections, args.seconds))
        elapsed = time.monotonic() - t0
        time.sleep(0.5)
        cpu1, after = cpu_seconds(proc.pid), counters(admin)
    finally:
        procs.stop(proc)
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    return {
        "phase": name,
        "noise_sample": noise,
        "requests": answered,
        "errors": errors,
        "rps": answered / elapsed,
        "proxy_cpu_ms_per_request": (cpu1 - cpu0) * 1000 / max(1, answered),
        "proxy_cpu_percent": (cpu1 - cpu0) / elapsed * 100,
        "counted": {k: int(v) for k, v in sorted(delta.items()) if v},
    }


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median CPU per request (rounds of one phase; the lower of two)."""
    ordered = sorted(runs, key=lambda r: float(r["proxy_cpu_ms_per_request"]))
    return ordered[(len(ordered) - 1) // 2]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per phase")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--rounds", type=int, default=2, help="phase sequences run; the median per phase shown"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--serve-upstreams", nargs="+", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_upstreams:
        serve_upstreams(args.serve_upstreams)
        return 0
    names = ("proxy", "admin", "primary", "shadow", "twin")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    with tempfile.TemporaryDirectory(prefix="noise-bench-") as tmpdir:
        tmp = Path(tmpdir)
        procs = Processes(tmp)
        try:
            upstream_ports = [str(ports[n]) for n in ("primary", "shadow", "twin")]
            up = procs.start(
                "upstreams", [sys.executable, __file__, "--serve-upstreams", *upstream_ports]
            )
            for n in ("primary", "shadow", "twin"):
                wait_ready(f"http://127.0.0.1:{ports[n]}/users/1", up, 30, n, procs, "upstreams")
            rounds = [
                [run_phase(name, s, ports, tmp, procs, args) for name, s in PHASES]
                for _ in range(args.rounds)
            ]
        finally:
            procs.stop_all()
    env = machine()
    results = [_median([r[i] for r in rounds]) for i in range(len(PHASES))]
    if args.json:
        print(json.dumps({"machine": env, "results": results, "rounds": rounds}, indent=2))
        return 0
    print(f"machine: {env}")
    print(
        f"load: {args.connections} connections, {args.seconds:g} s per phase, median of "
        f"{args.rounds} round(s); cpu ms/req per round: "
        + "; ".join(
            f"{name} " + ", ".join(f"{r[i]['proxy_cpu_ms_per_request']:.3f}" for r in rounds)
            for i, (name, _) in enumerate(PHASES)
        )
    )
    print(f"{'phase':<10} {'rps':>8} {'cpu ms/req':>11} {'proxy cpu%':>10}  counted")
    base = results[0]
    for r in results:
        extra = ""
        if r is not base:
            cost = r["proxy_cpu_ms_per_request"] / base["proxy_cpu_ms_per_request"] - 1
            extra = f"  (cpu/req {cost:+.0%} vs shadow)"
        print(
            f"{r['phase']:<10} {r['rps']:>8.0f} {r['proxy_cpu_ms_per_request']:>11.3f} "
            f"{r['proxy_cpu_percent']:>10.0f}  {r['counted']}{extra}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
