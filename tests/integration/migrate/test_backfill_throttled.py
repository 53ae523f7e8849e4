"""A backfill into a DynamoDB that throttles: it slows down, retries, and copies everything."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.migrate.job import open_job
from proxy.settings import settings_from_mapping
from tests.integration.migrate.conftest import ENV, Tables, fill
from tests.integration.migrate.test_backfill_verify import runner, verify

pytestmark = pytest.mark.integration

THROTTLED = {
    "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
    "message": "The level of configured provisioned throughput for the table was exceeded.",
}


class Throttler:
    """An HTTP hop in front of the real endpoint that answers every ``every``-th
    BatchWriteItem with DynamoDB's throttling error instead of passing it on."""

    def __init__(self, target: str, every: int) -> None:
        self.target = target
        self.every = every
        self.batch_writes = 0
        self.throttled = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.headers.get("X-Amz-Target", "").endswith(".BatchWriteItem"):
            self.batch_writes += 1
            if self.batch_writes % self.every == 0:
                self.throttled += 1
                return web.json_response(
                    THROTTLED, status=400, content_type="application/x-amz-json-1.0"
                )
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host",)}
        async with (
            aiohttp.ClientSession() as http,
            http.post(self.target, data=body, headers=headers) as answer,
        ):
            data = await answer.read()
            return web.Response(
                body=data, status=answer.status, content_type="application/x-amz-json-1.0"
            )


@pytest.fixture
async def throttler(moto_endpoint: str) -> AsyncIterator[Throttler]:
    hop = Throttler(moto_endpoint, every=3)
    app = web.Application()
    app.router.add_post("/", hop.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    hop.url = f"http://127.0.0.1:{port}"
    yield hop
    await runner.cleanup()


async def test_a_throttling_target_slows_the_backfill_and_loses_nothing(
    tables: Tables, throttler: Throttler
) -> None:
    raw: dict[str, Any] = copy.deepcopy(tables.raw)
    raw["backends"]["ddb"]["endpoint_url"] = throttler.url
    raw["backends"]["ddb"]["max_attempts"] = 10
    settings = settings_from_mapping(raw, env=ENV)
    async with open_job(settings, "users", source=None, target=None, env=ENV) as job:
        await fill(job, 1_500)
        backfill = runner(
            job,
            tables.tmp,
            rate=5_000,
        )
        result = await backfill.run(resume=False, restart=True)
        assert throttler.throttled > 0
        assert result.throttled > 0 and backfill._pacer.rate is not None
        assert backfill._pacer.rate < 5_000  # it slowed down
        assert result.written == 1_500 and result.left_to_repair == 0, result
    async with tables.job() as direct:  # compared straight against the endpoint
        outcome, diffs = await verify(direct)
    assert outcome.clean and diffs == [], outcome.summary()
