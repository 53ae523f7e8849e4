"""A backfill into a DynamoDB that throttles: it slows down, retries, and copies everything."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest

from proxy.migrate.job import open_job
from proxy.settings import settings_from_mapping
from tests.integration.migrate.conftest import ENV, Tables, fill
from tests.integration.migrate.test_backfill_verify import runner, verify
from tests.support.dynamohop import DynamoHop, dynamo_hop

pytestmark = pytest.mark.integration


@pytest.fixture
async def throttler(moto_endpoint: str) -> AsyncIterator[DynamoHop]:
    async with dynamo_hop(moto_endpoint) as hop:
        hop.throttle_every["BatchWriteItem"] = 3
        yield hop


async def test_a_throttling_target_slows_the_backfill_and_loses_nothing(
    tables: Tables, throttler: DynamoHop
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
