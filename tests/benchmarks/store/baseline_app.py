"""The baseline of tests/benchmarks/store_proxy.py: the hand-written microservice.

A minimal aiohttp + asyncpg service answering ``GET /users/{id}`` with one
``SELECT <columns> FROM <table> WHERE id = $1`` on one asyncpg pool per process and the row
as JSON (orjson, ``default=str`` for asyncpg's UUID type; ``jsonb`` encoded and decoded by an
asyncpg type codec, as such a service would do it); 404 when absent, 400 on a malformed id.
uvloop when installed. ``GET /healthz`` answers once the pool is open.

With ``--table``, ``--put-sql`` and ``--columns`` (the write phases) it also writes,
PostgreSQL only:

- ``PUT /users/{id}``: the whole record (every column; the key from the path when the body
  has none), one ``--put-sql`` statement (an ``INSERT ... ON CONFLICT ("id") DO UPDATE``
  upsert, its parameters in ``--columns`` order); the record as JSON.
- ``PATCH /users/{id}``: the given columns, one ``UPDATE <table> SET ... WHERE "id" = $1
  RETURNING <columns>`` (built once per set of columns); the row as JSON, 404 when absent.

Bodies are parsed with orjson and each value checked and converted for its column type (uuid,
text, boolean, timestamptz from ISO 8601, jsonb, text[]); 415 without a JSON content type, 400
on malformed JSON, 422 on a body the columns do not take. No access log, like the proxy under
test.

    python baseline_app.py --dsn DSN --sql 'SELECT ... WHERE "id" = $1' --port P [--workers N]
        [--table T --put-sql 'INSERT ...' --columns '[["id", "uuid"], ["email", "text"], ...]']

With ``--workers N`` > 1 the process starts N copies of itself sharing the port
(``SO_REUSEPORT``) and forwards SIGTERM/SIGINT to them, as ``shadowproxy serve --workers N``
does, so both systems get the same number of serving processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from aiohttp import web


class Invalid(ValueError):
    """A body value the column does not take (422)."""


def _uuid(value: Any) -> uuid.UUID:
    if not isinstance(value, str):
        raise Invalid("expected a UUID string")
    return uuid.UUID(value)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid("expected a string")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid("expected true or false")
    return value


def _timestamptz(value: Any) -> datetime:
    if not isinstance(value, str):
        raise Invalid("expected an ISO 8601 date-time string")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise Invalid("expected a date-time with a UTC offset")
    return parsed


def _jsonb(value: Any) -> Any:
    return value  # encoded by the connection's jsonb codec


def _text_array(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Invalid("expected a list of strings")
    return value


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "uuid": _uuid,
    "text": _text,
    "boolean": _boolean,
    "timestamptz": _timestamptz,
    "jsonb": _jsonb,
    "text[]": _text_array,
}


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def make_app(
    dsn: str,
    sql: str,
    pool_max: int,
    writes: tuple[str, str, list[tuple[str, str]]] | None = None,
) -> web.Application:
    """``writes``: (table, upsert, columns) to serve PUT and PATCH as well."""
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
    if writes is not None:
        add_writes(app, pool_key, *writes)
    return app


def add_writes(
    app: web.Application,
    pool_key: web.AppKey[asyncpg.Pool],
    table_name: str,
    put_sql: str,
    columns: list[tuple[str, str]],
) -> None:
    """PUT and PATCH /users/{id} (see the module doc); the first column is the key."""
    key_name = columns[0][0]
    types = dict(columns)
    convert = {name: CONVERTERS[pg_type] for name, pg_type in columns}
    table = ".".join(ident(part) for part in table_name.split("."))
    returning = ", ".join(ident(name) for name, _ in columns)
    update_sql: dict[tuple[str, ...], str] = {}

    def error(status: int, message: str) -> web.Response:
        return web.json_response({"error": message}, status=status)

    async def body_of(request: web.Request) -> dict[str, Any] | web.Response:
        if request.content_type != "application/json":
            return error(415, "expected Content-Type application/json")
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return error(400, "malformed JSON")
        if not isinstance(body, dict):
            return error(422, "expected a JSON object")
        unknown = set(body) - set(types)
        if unknown:
            return error(422, f"unknown fields: {sorted(unknown)}")
        return body

    def values(body: dict[str, Any], names: list[str]) -> list[Any]:
        out = []
        for name in names:
            value = body.get(name)
            out.append(None if value is None else convert[name](value))
        return out

    async def put_user(request: web.Request) -> web.Response:
        body = await body_of(request)
        if isinstance(body, web.Response):
            return body
        body.setdefault(key_name, request.match_info["id"])
        if body[key_name] != request.match_info["id"]:
            return error(422, "the key in the body differs from the key in the path")
        try:
            params = values(body, [name for name, _ in columns])
        except ValueError as e:  # Invalid, a malformed UUID or date-time
            return error(422, str(e))
        try:
            await request.app[pool_key].execute(put_sql, *params)
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as e:
            return error(422, str(e))
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def patch_user(request: web.Request) -> web.Response:
        try:
            key = uuid.UUID(request.match_info["id"])
        except ValueError:
            return error(400, "bad id")
        body = await body_of(request)
        if isinstance(body, web.Response):
            return body
        names = tuple(name for name in body if name != key_name)
        if not names:
            return error(422, "nothing to update")
        sql = update_sql.get(names)
        if sql is None:
            sets = ", ".join(
                f"{ident(name)} = ${i + 2}::{types[name]}" for i, name in enumerate(names)
            )
            sql = update_sql[names] = (
                f"UPDATE {table} SET {sets} WHERE {ident(key_name)} = $1 RETURNING {returning}"
            )
        try:
            params = values(body, list(names))
        except ValueError as e:
            return error(422, str(e))
        try:
            row = await request.app[pool_key].fetchrow(sql, key, *params)
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as e:
            return error(422, str(e))
        if row is None:
            return error(404, "not found")
        return web.Response(
            body=orjson.dumps(dict(row), default=str), content_type="application/json"
        )

    app.router.add_put("/users/{id}", put_user)
    app.router.add_patch("/users/{id}", patch_user)


async def serve(args: argparse.Namespace) -> None:
    writes = None if args.table is None else (args.table, args.put_sql, args.columns)
    app = make_app(args.dsn, args.sql, args.pool_max, writes)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
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
    if args.put_sql is not None:
        cmd += ["--table", args.table, "--put-sql", args.put_sql]
        cmd += ["--columns", json.dumps(args.columns)]
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
    p.add_argument("--table", help="the table PATCH updates (with --put-sql)")
    p.add_argument("--put-sql", help="the upsert of PUT /users/{id}, parameters in --columns order")
    p.add_argument(
        "--columns",
        type=json.loads,
        help="JSON [[name, PostgreSQL type], ...], the key first: enables PUT and PATCH",
    )
    args = p.parse_args()
    if len({args.table is None, args.put_sql is None, args.columns is None}) > 1:
        p.error("--table, --put-sql and --columns go together")
    if args.columns is not None:
        args.columns = [(str(name), str(pg_type)) for name, pg_type in args.columns]
        missing = {t for _, t in args.columns} - set(CONVERTERS)
        if missing:
            p.error(f"no converter for column type(s) {sorted(missing)}")
    if args.workers > 1:
        return run_workers(args)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
