"""The backend of the local fault runs, in a process of its own: deterministic answers, so one
asked directly is what a client of the proxy must get.

    python -m tests.faults.upstream PORT

``GET /users/{n}``: a JSON user with headers of its own (``ETag``, ``Cache-Control``,
``X-Upstream``); ``n`` a multiple of 17 is a ``404`` in JSON; ``?size=BYTES`` pads the body to
that size (a large answer, streamed). Any other method echoes its body with ``201``.
"""

from __future__ import annotations

import sys

import orjson
from aiohttp import web


def user_body(n: int, size: int = 0) -> bytes:
    body = {
        "id": n,
        "name": f"user {n}",
        "roles": ["viewer", "admin"][: 1 + n % 2],
        "bio": "x" * (n * 37 % 3000),
    }
    raw = orjson.dumps(body)
    if size > len(raw):
        body["pad"] = "p" * (size - len(raw) - 10)
        raw = orjson.dumps(body)
    return raw


async def handle(request: web.Request) -> web.StreamResponse:
    parts = request.path.strip("/").split("/")
    if request.method not in ("GET", "HEAD"):
        return web.Response(status=201, body=await request.read(), content_type="application/json")
    if len(parts) != 2 or parts[0] != "users" or not parts[1].isdigit():
        return web.json_response({"error": "not found"}, status=404)
    n = int(parts[1])
    if n % 17 == 0:
        return web.json_response({"error": f"no user {n}"}, status=404, headers={"X-Upstream": "u"})
    body = user_body(n, int(request.query.get("size", "0")))
    headers = {"ETag": f'"v{n}"', "Cache-Control": f"max-age={n}", "X-Upstream": "users"}
    return web.Response(body=body, content_type="application/json", headers=headers)


def main() -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
