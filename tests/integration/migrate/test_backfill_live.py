"""A backfill beside a live proxy that dual-writes: updates and deletes made through the
proxy while the backfill copies are never undone by it."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import aiohttp
import pytest

from tests.integration.migrate.conftest import ENV, Tables, fill
from tests.integration.migrate.test_backfill_verify import runner, verify
from tests.support.servers import start_proxy

pytestmark = pytest.mark.integration


async def test_live_writes_during_the_backfill_keep_the_newer_state(tables: Tables) -> None:
    async with tables.job() as job:
        records = await fill(job, 4_000)
        proxy = await start_proxy(tables.raw, env=ENV)
        try:
            rng = random.Random(11)
            targets = rng.sample(records, 400)
            patched = {str(r["id"]): f"live-{n}" for n, r in enumerate(targets[:300])}
            deleted = [str(r["id"]) for r in targets[300:]]
            statuses: list[int] = []

            async def writes() -> None:
                async with aiohttp.ClientSession() as http:
                    for key, name in patched.items():
                        body: dict[str, Any] = {"last_name": name}
                        async with http.patch(f"{proxy.url}/users/{key}", json=body) as r:
                            statuses.append(r.status)
                        if len(statuses) % 50 == 0:
                            for gone in deleted[: len(statuses) // 3]:
                                async with http.delete(f"{proxy.url}/users/{gone}") as r:
                                    statuses.append(r.status)
                    for gone in deleted:
                        async with http.delete(f"{proxy.url}/users/{gone}") as r:
                            statuses.append(r.status)

            backfill = runner(
                job,
                tables.tmp,
                rate=2_000,  # about two seconds: the writes land while pages are copied
                concurrency=2,
            )
            result, _ = await asyncio.gather(backfill.run(resume=False, restart=True), writes())
            assert set(statuses) <= {200, 204, 404}, statuses
            assert result.read >= 4_000 - len(deleted)
            await proxy.wait_for(
                lambda: proxy.apps.resources.services["users"].writes.pending == 0, timeout=30
            )
        finally:
            await proxy.stop()
        ddb = job.target_store
        for key in deleted:
            assert await ddb.get(job.parts.schema.parse_key(key)) is None, key
        for key, name in rng.sample(sorted(patched.items()), 50):
            found = await ddb.get(job.parts.schema.parse_key(key))
            assert found is not None and found["last_name"] == name, key
        outcome, diffs = await verify(job)
        assert outcome.clean and diffs == [], outcome.summary()
        assert outcome.source_records == 4_000 - len(deleted)
