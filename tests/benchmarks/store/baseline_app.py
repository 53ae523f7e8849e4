"""The baseline of tests/benchmarks/store_proxy.py: the hand-written microservice.

A minimal aiohttp + asyncpg service answering ``GET /users/{id}`` with one
``SELECT <columns> FROM <table> WHERE id = $1`` on one asyncpg pool per process and the row
as JSON (orjson, ``default=str`` for asyncpg's UUID type; ``jsonb`` decoded by an asyncpg type
codec, as such a service would do it); 404 when absent, 400 on a malformed id. uvloop when
installed. ``GET /healthz`` answers once the pool is open.

    python baseline_app.py --dsn DSN --sql 'SELECT ... WHERE "id" = $1' --port P [--workers N]

With ``--workers N`` > 1 the process starts N copies of itself sharing the port
(``SO_REUSEPORT``) and forwards SIGTERM/SIGINT to them, as ``shadowproxy serve --workers N``
does, so both systems get the same number of serving processes.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable

import asyncpg
import orjson
from aiohttp import web


def make_app(dsn: str, sql: str, pool_max: int) -> web.Application:
    pool_key = web.AppKey("pool", asyncpg.Pool)

    async def init_connection(conn: asyncpg.Connection) -> None:
        await conn.set_type_codec(
            "jsonb", schema="pg_catalog", encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
        )  # fmt: skip

    async def pool_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        app[pool_key] = await asyncpg.create_pool(
            dsn, min_size=1, max_size=pool_max, init=init_connection
        )
        yield
        await app[pool_key].close()

    async def get_user(request: web.Request) -> web.Response:
        try:
            key = uuid.UUID(request.match_info["id"])
        except ValueError:
            return web.json_response({"error": "bad id"}, status=400)
        row = await request.app[pool_key].fetchrow(sql, key)
        if row is None:
            return web.json_response({"error": "not found"}, status=404)
        return web.Response(
            body=orjson.dumps(dict(row), default=str), content_type="application/json"
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.cleanup_ctx.append(pool_ctx)
    app.router.add_get("/users/{id}", get_user, allow_head=False)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(args: argparse.Namespace) -> None:
    runner = web.AppRunner(
        make_app(args.dsn, args.sql, args.pool_max), handle_signals=False, access_log=None
    )
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, args.host, args.port, reuse_port=args.reuse_port, backlog=1024)
        await site.start()
        await stop.wait()
    finally:
        await runner.cleanup()


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_workers(args: argparse.Namespace) -> int:
    cmd = [sys.executable, __file__, "--dsn", args.dsn, "--sql", args.sql, "--host", args.host]
    cmd += ["--port", str(args.port), "--pool-max", str(args.pool_max), "--reuse-port"]
    children = [subprocess.Popen(cmd) for _ in range(args.workers)]

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    for child in children:
        while True:
            try:
                rc = child.wait()
                break
            except InterruptedError:
                continue
        code = code or rc
    return code


def main() -> int:
    p = argparse.ArgumentParser(description="baseline users service (aiohttp + asyncpg)")
    p.add_argument("--dsn", required=True)
    p.add_argument("--sql", required=True, help="the get-by-key SELECT, one parameter ($1)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pool-max", type=int, default=10)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--reuse-port", action="store_true")
    args = p.parse_args()
    if args.workers > 1:
        return run_workers(args)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
