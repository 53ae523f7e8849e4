"""An HTTP hop in front of a real DynamoDB endpoint that can answer chosen operations with
DynamoDB's throttling error instead of passing them on: a table over its capacity, on cue."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web

THROTTLED = {
    "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
    "message": "The level of configured provisioned throughput for the table was exceeded.",
}
AMZ_JSON = "application/x-amz-json-1.0"
STALL_SECONDS = 3.0


class DynamoHop:
    """``throttle_every[op] = n`` throttles every n-th call of ``op`` (``BatchWriteItem``);
    ``throttle_from[op] = n`` every call from the n-th on (counted in ``seen``);
    ``throttle_all`` holds operations throttled on every call; ``stall_from[op] = n`` holds
    every call from the n-th on for ``STALL_SECONDS`` before passing it on. ``seen`` counts
    calls by operation, ``throttled`` the answers replaced."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.throttle_every: dict[str, int] = {}
        self.throttle_from: dict[str, int] = {}
        self.throttle_all: set[str] = set()
        self.stall_from: dict[str, int] = {}
        self.seen: Counter[str] = Counter()
        self.throttled = 0
        self.url = ""
        self._http: aiohttp.ClientSession | None = None

    def _throttles(self, operation: str) -> bool:
        every = self.throttle_every.get(operation)
        start = self.throttle_from.get(operation)
        n = self.seen[operation]
        return (
            operation in self.throttle_all
            or (every is not None and n % every == 0)
            or (start is not None and n >= start)
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        operation = request.headers.get("X-Amz-Target", "").rpartition(".")[2]
        self.seen[operation] += 1
        stall = self.stall_from.get(operation)
        if stall is not None and self.seen[operation] >= stall:
            await asyncio.sleep(STALL_SECONDS)
        elif self._throttles(operation):
            self.throttled += 1
            return web.json_response(THROTTLED, status=400, content_type=AMZ_JSON)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        assert self._http is not None
        async with self._http.post(self.target, data=body, headers=headers) as answer:
            data = await answer.read()
            return web.Response(body=data, status=answer.status, content_type=AMZ_JSON)


@asynccontextmanager
async def dynamo_hop(target: str) -> AsyncIterator[DynamoHop]:
    hop = DynamoHop(target)
    app = web.Application()
    app.router.add_post("/", hop.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    hop.url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        hop._http = http
        try:
            yield hop
        finally:
            await runner.cleanup()
