"""Benchmark: the CPU one DynamoDB call costs the proxy's client, against the bare transport.

A shadow read in store mode is one ``GetItem`` through ``proxy.store.dynamo_http``: sign,
send over a kept-alive connection, read, check, parse. This script measures that call's CPU
in the calling process alone, with the endpoint in a process of its own (a static answer, so
no emulator's CPU is in the figure):

- ``transport``  ``proxy.h1.send`` of one fixed, pre-signed request, then the body read: the
                 floor any client on this transport pays (the baseline of the ratio)
- ``client``     ``DynamoHttpClient.call("GetItem", ...)``: what a shadow read pays

Both run in the same process, interleaved over ``--rounds``, ``--concurrency`` calls in
flight; the figure is CPU time per call (``time.process_time``), median over rounds.

    .venv/bin/python tests/benchmarks/dynamo_call.py [--calls 20000] [--rounds 5]
        [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

import benchlib

from proxy import h1
from proxy.store.dynamo_http import DynamoHttpClient

ITEM = {
    "id": {"S": "6f1c2a4e-8b7d-4c1e-9a3f-2b5d7e9c1a0f"},
    "email": {"S": "someone@example.com"},
    "first_name": {"S": "Ada"},
    "last_name": {"S": "Lovelace"},
    "is_active": {"BOOL": True},
    "created_at": {"S": "2024-01-02T03:04:05.123456Z"},
    "preferences": {"M": {"theme": {"S": "dark"}, "digest": {"N": "7"}}},
    "roles": {"SS": ["admin", "user"]},
}
ANSWER = orjson.dumps({"Item": ITEM})
SERVER = f"""
import asyncio, sys, uvloop
ANSWER = {ANSWER!r}
HEAD = b"HTTP/1.1 200 OK\\r\\nContent-Type: application/x-amz-json-1.0\\r\\nContent-Length: " + \\
    str(len(ANSWER)).encode() + b"\\r\\n\\r\\n"
class P(asyncio.Protocol):
    def connection_made(self, t): self.t, self.buf = t, b""
    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\\r\\n\\r\\n")
            if end < 0: return
            head = self.buf[:end].lower()
            i = head.find(b"content-length: ")
            n = int(head[i + 16:].split(b"\\r\\n")[0]) if i >= 0 else 0
            if len(self.buf) < end + 4 + n: return
            self.buf = self.buf[end + 4 + n:]
            self.t.write(HEAD + ANSWER)
async def main():
    server = await asyncio.get_running_loop().create_server(P, "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    await server.serve_forever()
uvloop.run(main())
"""


async def measure(call: Callable[[], Awaitable[object]], calls: int, concurrency: int) -> float:
    """CPU µs per call of this process, ``concurrency`` calls in flight."""
    per_worker = calls // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            await call()

    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return 1e6 * (time.process_time() - started) / (per_worker * concurrency)


async def run(args: argparse.Namespace, port: int) -> dict[str, list[float]]:
    client = DynamoHttpClient(
        f"http://127.0.0.1:{port}",
        "us-east-1",
        access_key_id="bench",
        secret_access_key="bench",
        connect_timeout=2,
        read_timeout=5,
        max_attempts=3,
    )
    await client.open()
    pool = h1.Pool("127.0.0.1", port, limit=64, connect_timeout=2)
    request = {"TableName": "users", "Key": {"id": {"S": ITEM["id"]["S"]}}}
    body = orjson.dumps(request)
    head = (
        f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/x-amz-json-1.0\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()

    async def transport() -> object:
        response, _ = await h1.send(pool, "POST", head, body)
        try:
            return await response.read()
        finally:
            response.release()

    async def dynamo() -> object:
        return await client.call("GetItem", request)

    assert (await dynamo())["Item"] == ITEM  # the client reads the answer it is measured on
    figures: dict[str, list[float]] = {"transport": [], "client": []}
    try:
        await measure(transport, args.calls // 4, args.concurrency)  # warm-up
        await measure(dynamo, args.calls // 4, args.concurrency)
        for _ in range(args.rounds):
            figures["transport"].append(await measure(transport, args.calls, args.concurrency))
            figures["client"].append(await measure(dynamo, args.calls, args.concurrency))
    finally:
        pool.close()
        await client.close()
    return figures


def rounded(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per round (20000)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (5)")
    parser.add_argument("--concurrency", type=int, default=8, help="calls in flight (8)")
    args = parser.parse_args()
    if args.calls < args.concurrency or args.rounds < 1 or args.concurrency < 1:
        parser.error("--calls must be at least --concurrency, and both and --rounds at least 1")
    (port,) = benchlib.free_ports(1)
    tmp = Path(tempfile.mkdtemp(prefix="shadowproxy-dynamo-call-"))
    procs = benchlib.Processes(tmp)
    try:
        with benchlib.guarded(procs):
            endpoint = procs.start("endpoint", [sys.executable, "-c", SERVER, str(port)])
            url = f"http://127.0.0.1:{port}/"
            benchlib.wait_ready(url, endpoint, 10, "the endpoint", procs, "endpoint")
            figures = uvloop.run(run(args, port))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    floor, client = (statistics.median(figures[k]) for k in ("transport", "client"))
    print(
        f"{benchlib.cpu_model()}, {platform.python_implementation()} {platform.python_version()}"
        f", uvloop {uvloop.__version__}; {args.calls:,} calls x {args.rounds} rounds, "  # type: ignore[attr-defined]
        f"{args.concurrency} in flight; CPU µs per call of the calling process, median:"
    )
    rounds = {name: rounded(values) for name, values in figures.items()}
    print(f"  transport (h1.send + read)        {floor:7.1f}  (rounds: {rounds['transport']})")
    print(f"  client (DynamoHttpClient GetItem) {client:7.1f}  (rounds: {rounds['client']})")
    print(f"  client / transport                {client / floor:7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
