"""Benchmark: what serving the drop-in port costs before any proxying, per server.

The lever this measures: replace aiohttp's server on the drop-in port with a leaner one. Each
server answers every request with the same ~1 KB JSON the HTTP benchmark's upstream sends,
from a coroutine per request (a proxy's handler awaits its backend, so a server that skipped
the coroutine would measure a floor no proxy reaches):

- ``aiohttp``: aiohttp's low-level ``web.Server``, set up as ``shadowproxy serve`` sets up the
  drop-in port (``proxy.client_timeouts``' watched site and tracked handler, uvloop).
- ``aiohttp-bytes``: the same, the handler answering with ``proxy.http.answer``'s ``Whole``
  (the bytes ``whole_answer`` builds from the backend's header bytes), as the forwarder
  answers a whole backend answer.
- ``httptools``: an asyncio protocol on llhttp (``httptools``, as uvicorn's httptools
  protocol), one task per request, uvloop: the floor of a lean server on the same loop.
- ``granian``: granian's RSGI interface (its HTTP/1 server in Rust, the handler on asyncio).

Each server is one process pinned to CPU 1, wrk (closed loop) to CPU 0. Printed: requests/s,
and the server's CPU time per request from ``/proc``. Example: ``.venv/bin/python
tests/benchmarks/server_floor.py --rounds 3``. Needs ``wrk`` and ``taskset``; ``granian`` is
measured when it is importable (``pip install granian``) and skipped, said so, when not.
"""

from __future__ import annotations

import argparse
import importlib.util
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

from benchlib import (
    REPO,
    BenchError,
    Processes,
    cpu_model,
    cpu_seconds,
    free_ports,
    guarded,
    wait_ready,
)

BODY = b'{"id": 42, "name": "Ada Lovelace", "email": "ada@example.com", "bio": "' + b"x" * 1000
BODY += b'"}'
SERVER_CPU, LOAD_CPU = "1", "0"

# aiohttp's server as ``shadowproxy serve`` sets up the drop-in port; the handler is the
# only difference between the two aiohttp servers measured.
AIOHTTP_SERVE = """
async def main():
    runner = web.ServerRunner(web.Server(tracked(handler), access_log=None), handle_signals=False)
    await runner.setup()
    site = WatchedSite(runner, "127.0.0.1", {port}, timeouts=ClientTimeouts(10, 30, 75),
                       on_cut=lambda phase: None)
    await site.start()
    await asyncio.Event().wait()
uvloop.run(main())
"""

AIOHTTP = (
    """
import asyncio, sys, uvloop
from aiohttp import web
from proxy.client_timeouts import ClientTimeouts, WatchedSite, tracked
BODY = {body!r}
async def handler(request):
    return web.Response(body=BODY, content_type="application/json")
"""
    + AIOHTTP_SERVE
)

AIOHTTP_BYTES = (
    """
import asyncio, sys, uvloop
from aiohttp import web
from proxy.client_timeouts import ClientTimeouts, WatchedSite, tracked
from proxy.http.answer import Whole, whole_answer
from proxy.http.upstream import end_to_end_items, with_request_id
BODY = {body!r}
RAW = [(b"Content-Type", b"application/json"), (b"Content-Length", str(len(BODY)).encode())]
async def handler(request):
    items = with_request_id(end_to_end_items(RAW), "rid")
    return Whole(200, "OK", whole_answer(request, 200, "OK", items, BODY))
"""
    + AIOHTTP_SERVE
)

HTTPTOOLS = """
import asyncio, httptools, uvloop
BODY = {body!r}
HEAD = (b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: "
        + str(len(BODY)).encode() + b"\\r\\n\\r\\n")
tasks = set()
class Server(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers = []
    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()
    def on_url(self, url):
        self.url += url
    def on_header(self, name, value):
        self.headers.append((name, value))
    def on_message_complete(self):
        task = asyncio.get_running_loop().create_task(self.handle(self.parser.should_keep_alive()))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        self.url, self.headers = b"", []
    async def handle(self, keep_alive):
        self.transport.write(HEAD + BODY)
        if not keep_alive:
            self.transport.close()
async def main():
    server = await asyncio.get_running_loop().create_server(Server, "127.0.0.1", {port})
    await server.serve_forever()
uvloop.run(main())
"""

GRANIAN = """
BODY = {body!r}
HEADERS = [("content-type", "application/json")]
async def app(scope, proto):
    proto.response_bytes(200, HEADERS, BODY)
"""


SCRIPTS = {"aiohttp": AIOHTTP, "aiohttp-bytes": AIOHTTP_BYTES, "httptools": HTTPTOOLS}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, default=8, help="seconds per run (8)")
    p.add_argument("--rounds", type=int, default=3, help="runs per server, interleaved (3)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    args = p.parse_args(argv)
    if args.duration < 1 or args.rounds < 1 or args.connections < 1:
        p.error("--duration, --rounds and --connections must be positive")
    return args


def start(name: str, port: int, tmp: Path, procs: Processes) -> subprocess.Popen[bytes]:
    pin = ["taskset", "-c", SERVER_CPU]
    if name == "granian":
        (tmp / "rsgi_app.py").write_text(GRANIAN.format(body=BODY))
        cmd = [*pin, sys.executable, "-m", "granian", "--interface", "rsgi", "--loop", "uvloop"]
        cmd += ["--workers", "1", "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--working-dir", str(tmp), "--no-ws", "--http", "1", "rsgi_app:app"]
    else:
        code = SCRIPTS[name].format(body=BODY, port=port)
        script = tmp / f"serve_{name}.py"  # not aiohttp.py: it would shadow aiohttp
        script.write_text(code)
        cmd = [*pin, sys.executable, str(script)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = procs.start(name, cmd, env=env)
    wait_ready(f"http://127.0.0.1:{port}/users/42", proc, 30, name, procs, name)
    return proc


def server_pid(proc: subprocess.Popen[bytes]) -> int:
    """The process that serves: granian's worker is a child of its main process."""
    kids = subprocess.run(
        ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    return int(kids[-1]) if kids else proc.pid


def measure(url: str, pid: int, args: argparse.Namespace) -> tuple[float, float]:
    before = cpu_seconds(pid)
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{args.connections}",
         f"-d{args.duration}s", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    used = cpu_seconds(pid) - before
    requests = next(int(line.split()[0]) for line in out.splitlines() if "requests in" in line)
    if "Non-2xx" in out or "Socket errors" in out:
        raise BenchError(f"errors under load:\n{out}")
    return requests / args.duration, 1e6 * used / requests


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = ["aiohttp", "aiohttp-bytes", "httptools"]
    if importlib.util.find_spec("granian") is not None:
        names.append("granian")
    else:
        print("granian is not installed: measuring aiohttp, aiohttp-bytes and httptools only")
    tmp = Path(tempfile.mkdtemp(prefix="shadowproxy-floor-"))
    procs = Processes(tmp)
    results: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    try:
        with guarded(procs):
            servers = {}
            for name, port in zip(names, free_ports(len(names)), strict=True):
                servers[name] = (server_pid(start(name, port, tmp, procs)), port)
            for round_ in range(args.rounds + 1):
                for name, (pid, port) in servers.items():
                    got = measure(f"http://127.0.0.1:{port}/users/42", pid, args)
                    if round_:  # round 0 warms up
                        results[name].append(got)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\n{os.cpu_count()} CPUs ({cpu_model()}), Python {platform.python_version()}; "
        f"server on CPU {SERVER_CPU}, wrk -c{args.connections} on CPU {LOAD_CPU}; medians of "
        f"{args.rounds} interleaved runs of {args.duration} s\n"
    )
    base_cpu = statistics.median(cpu for _, cpu in results["aiohttp"])
    print("| server | rps | CPU µs/request | CPU vs aiohttp |\n|---|---:|---:|---:|")
    for name, runs in results.items():
        rps = statistics.median(r for r, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"| {name} | {rps:,.0f} | {cpu:.1f} | {cpu / base_cpu:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
