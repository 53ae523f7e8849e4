"""Backfill and verify against a real PostgreSQL and DynamoDB endpoint: a full copy of every
field type, planted differences each reported once, segments, rejects, live writes."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from comparators.redact import Redactor
from proxy.migrate.backfill import Backfill
from proxy.migrate.checkpoint import FileCheckpoints
from proxy.migrate.job import Job, Segment
from proxy.migrate.progress import JobMetrics, Progress
from proxy.migrate.verify import Verify, VerifyOutcome
from tests.integration.migrate.conftest import Tables, fill

pytestmark = pytest.mark.integration

WHOLE = Segment()
REDACTOR = Redactor(frozenset({"email"}), key=b"test-key")


def quiet_progress(job: str = "backfill") -> Progress:
    return Progress(job, "users", stream=io.StringIO(), metrics=JobMetrics())


def runner(
    job: Job, tmp: Path, segment: Segment = WHOLE, rejects: Any = None, **kw: Any
) -> Backfill:
    """A backfill of ``job`` with quiet progress and checkpoints under ``tmp``."""
    return Backfill(
        job,
        segment=segment,
        checkpoints=FileCheckpoints(tmp / "checkpoints"),
        rejects=io.BytesIO() if rejects is None else rejects,
        redactor=REDACTOR,
        progress=quiet_progress(),
        **kw,
    )


async def backfill(
    job: Job, tmp: Path, segment: Segment = WHOLE, **kw: Any
) -> tuple[Any, list[dict[str, Any]]]:
    rejects = io.BytesIO()
    resume = kw.pop("resume", False)
    result = await runner(job, tmp, segment, rejects, **kw).run(resume=resume, restart=not resume)
    lines = [orjson.loads(line) for line in rejects.getvalue().splitlines()]
    return result, lines


async def verify(job: Job, **kw: Any) -> tuple[VerifyOutcome, list[dict[str, Any]]]:
    output = io.BytesIO()
    outcome = await Verify(
        job,
        segment=kw.pop("segment", Segment()),
        redactor=REDACTOR,
        progress=quiet_progress("verify"),
        output=output,
        recheck_delay=kw.pop("recheck_delay", 0.05),
    ).run()
    return outcome, [orjson.loads(line) for line in output.getvalue().splitlines()]


@pytest.mark.timeout(300)
async def test_backfill_of_every_field_type_then_verify_is_clean(tables: Tables) -> None:
    async with tables.job() as job:
        records = await fill(job, 20_000)
        result, rejects = await backfill(job, tables.tmp)
        assert (result.read, result.written, result.rejected) == (20_000, 20_000, 0), result
        assert rejects == []
        outcome, diffs = await verify(job)
        assert diffs == [] and outcome.clean, outcome.summary()
        assert (outcome.source_records, outcome.target_records) == (20_000, 20_000)
        # Exactly as stored: the other store returns what the source holds, digit for digit.
        schema = job.parts.schema
        sample = [r["id"] for r in records[::997]]
        there = {r["id"]: schema.dumps(r) for r in await job.target_store.batch_get(sample)}
        here = {r["id"]: schema.dumps(r) for r in await job.source_store.batch_get(sample)}
        assert there == here and len(here) == len(sample)
        assert await job.repair_log.depth() == 0  # type: ignore[union-attr]
        assert await job.repair_log.in_flight() == 0  # type: ignore[union-attr]


async def test_planted_differences_are_each_reported_once(tables: Tables) -> None:
    async with tables.job() as job:
        records = await fill(job, 1_200)
        await backfill(job, tables.tmp)
        ddb, schema = job.target_store, job.parts.schema
        changed, gone, drifted, email = records[10], records[20], records[30], records[40]
        await ddb.put({**changed, "last_name": "Planted"})
        await ddb.delete(gone["id"])
        extra = schema.validate({**records[50], "id": str(uuid.uuid4())}, partial=False)
        await ddb.put(extra)
        await ddb._client.call(  # type: ignore[attr-defined]
            "UpdateItem",
            {
                "TableName": ddb.table,  # type: ignore[attr-defined]
                "Key": {"id": {"S": str(drifted["id"])}},
                "UpdateExpression": "SET #r = :v",
                "ExpressionAttributeNames": {"#r": "roles"},
                "ExpressionAttributeValues": {":v": {"L": [{"S": "user"}]}},
            },
        )
        await ddb.put({**email, "email": "changed@example.com"})
        outcome, diffs = await verify(job)
        assert (outcome.missing, outcome.extra, outcome.differing) == (1, 1, 3), outcome.summary()
        by_key = {d["key"]: d for d in diffs}
        assert len(diffs) == len(by_key) == 5  # each once
        assert by_key[str(gone["id"])]["kind"] == "missing"
        assert by_key[str(extra["id"])]["kind"] == "extra"
        [last] = by_key[str(changed["id"])]["fields"]
        assert (last["path"], last["postgres"], last["dynamodb"]) == (
            "last_name", changed["last_name"], "Planted",
        )  # fmt: skip
        assert by_key[str(drifted["id"])]["kind"] == "differs"
        [mail] = by_key[str(email["id"])]["fields"]
        assert mail["path"] == "email"
        assert str(mail["postgres"]).startswith("redacted:")  # never the address itself
        assert "changed@example.com" not in orjson.dumps(diffs).decode()
        assert not outcome.clean


async def test_segments_cover_the_table_once(tables: Tables) -> None:
    async with tables.job() as job:
        records = await fill(job, 3_000)
        written = []
        for i in range(3):
            result, _ = await backfill(job, tables.tmp, Segment(i, 3))
            written.append(result.written)
        assert sum(written) == 3_000 and all(n > 0 for n in written), written
        seen = []
        for i in range(4):  # the other store's segments partition it too, whatever N
            async for page in job.target_store.scan_pages(i, 4):
                seen.extend(r["id"] for r in page.records)
        assert sorted(seen) == sorted(r["id"] for r in records)
        verified = [await verify(job, segment=Segment(i, 2)) for i in range(2)]
        assert all(o.clean for o, _ in verified)
        assert sum(o.source_records for o, _ in verified) == 3_000


async def test_rows_that_break_the_schema_go_to_the_rejects_file(tables: Tables) -> None:
    async with tables.job() as job:
        records = await fill(job, 300)
        table = job.source_store.table  # type: ignore[attr-defined]
        bad = [records[5]["id"], records[6]["id"], records[7]["id"]]
        async with job.source_store._connection() as conn:  # type: ignore[attr-defined]
            # A legacy table, older than the schema: it never had these constraints.
            await conn.execute(f'ALTER TABLE "{table}" ALTER COLUMN email DROP NOT NULL')
            await conn.execute(f'ALTER TABLE "{table}" ALTER COLUMN is_active DROP NOT NULL')
            await conn.execute(f'UPDATE "{table}" SET email = NULL WHERE id = $1', bad[0])
            await conn.execute(f'UPDATE "{table}" SET is_active = NULL WHERE id = $1', bad[1])
            huge = "x" * 500_000  # over DynamoDB's item limit
            await conn.execute(f'UPDATE "{table}" SET last_name = $2 WHERE id = $1', bad[2], huge)
        result, rejects = await backfill(job, tables.tmp)
        assert (result.read, result.written, result.rejected) == (300, 297, 3)
        assert sorted(line["key"] for line in rejects) == sorted(str(k) for k in bad)
        reasons = {line["key"]: line for line in rejects}
        assert "email" in reasons[str(bad[0])]["reason"]
        assert "is_active" in reasons[str(bad[1])]["reason"]
        assert "last_name" in reasons[str(bad[2])]["reason"]
        assert "@example.com" not in orjson.dumps(rejects).decode()
        assert await job.target_store.get(bad[0]) is None  # never half-copied


async def test_bad_options_are_refused_before_anything_is_copied(tables: Tables) -> None:
    from proxy.errors import ConfigError

    async with tables.job() as job:
        with pytest.raises(ConfigError, match="--concurrency 0"):
            Backfill(job, segment=Segment(), checkpoints=FileCheckpoints(tables.tmp),
                     rejects=io.BytesIO(), redactor=REDACTOR, progress=quiet_progress(),
                     concurrency=0)  # fmt: skip
        checkpoints = FileCheckpoints(tables.tmp / "cp")
        await checkpoints.save(
            "backfill-users-postgres-to-dynamodb-0of1", {"position": None, "done": False}
        )
        runner = Backfill(job, segment=Segment(), checkpoints=checkpoints, rejects=io.BytesIO(),
                          redactor=REDACTOR, progress=quiet_progress())  # fmt: skip
        with pytest.raises(ConfigError, match="--resume"):
            await runner.run(resume=False, restart=False)
        (tables.tmp / "cp" / "backfill-users-postgres-to-dynamodb-0of1.json").write_text("{oops")
        with pytest.raises(ConfigError, match="not JSON"):
            await runner.run(resume=True, restart=False)
    with pytest.raises(ConfigError, match="no such resource"):
        from proxy.migrate.job import open_job

        async with open_job(tables.settings, "orders", source=None, target=None):
            pass
