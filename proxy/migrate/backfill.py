"""``shadowproxy backfill``: copy every record of a resource from the primary to the other store.

Pages are read from the source segment in order (PostgreSQL: keyset pages in key order;
DynamoDB: a parallel-scan segment) and copied the way a dual write's batch is copied
(``proxy.repair.copy.copy_batch``): one batch write (DynamoDB: chunks of 25, unprocessed items
retried), then one batch read of the same keys from the source; a key the source moved or
deleted meanwhile is copied again on its own. So beside a proxy that dual-writes, whichever
copy of a key lands last was made by a writer that read the source after it landed: a
backfilled copy never replaces a newer write made through the proxy, and a key deleted
through the proxy is not brought back. With a shared repair log, each page's keys are logged
as intents first (a killed backfill leaves them to the repairer) and a key whose copy failed
stays logged for repair.

Only the primary is a source: the copy reads back the store the proxy treats as the truth.

Records that break the schema (a type the field does not allow, a required field null, a
record over ``max_record_bytes``) are not copied: each becomes a line of the rejects file
(key, reason, fields; sensitive values as keyed hashes) and is counted; the exit status says
so. After every page that finished in order, the segment's checkpoint holds the scan position
after it, so ``--resume`` copies at most ``--concurrency`` pages again.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from aiolimiter import AsyncLimiter

from comparators.errors import ShadowProxyError
from comparators.redact import Redactor
from proxy.errors import ConfigError
from proxy.migrate.checkpoint import Checkpoints
from proxy.migrate.job import Job, Segment
from proxy.migrate.progress import Progress
from proxy.repair.copy import copy_batch
from proxy.repair.log import escalate_writes
from proxy.store.base import (
    LimitExceeded,
    Record,
    Throttled,
    no_retry_of_unknown_writes,
    outcome_unknown,
)
from proxy.store.retry import RetryPolicy
from proxy.store.schema import SchemaError
from proxy.store.sizes import check_record_size
from proxy.tasks import spawn

log = logging.getLogger("shadowproxy.jobs")

MAX_PAGE_ATTEMPTS = 6


class BackfillFailed(ShadowProxyError):
    """A page could not be copied after every retry; the checkpoint stays before it."""


@dataclass
class BackfillResult:
    segment: Segment
    read: int = 0
    written: int = 0
    rejected: int = 0
    retried: int = 0
    throttled: int = 0
    left_to_repair: int = 0
    """Keys whose copy failed and that the repair log holds for the repairer."""
    resumed: bool = False
    already_done: bool = False
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        return {
            "read": self.read,
            "written": self.written,
            "rejected": self.rejected,
            "retried": self.retried,
            "throttled": self.throttled,
            "left_to_repair": self.left_to_repair,
        }

    def summary(self, resource: str) -> str:
        rate = self.read / self.seconds if self.seconds > 0 else 0.0
        parts = [
            f"backfill {resource} segment {self.segment}: {self.read} read, "
            f"{self.written} written, {self.rejected} rejected",
            f"{self.retried} retried, {self.throttled} throttled",
            f"{self.left_to_repair} left to the repair log",
            f"{self.seconds:.1f}s ({rate:,.0f} records/s)",
        ]
        if self.already_done:
            parts.append("already done (checkpoint)")
        return ", ".join(parts)


class Pacer:
    """``--rate`` records/s (``aiolimiter``), halved while the target throttles and raised
    back by a tenth per page that was not throttled. Without ``--rate`` a throttle sets a
    rate from the pace measured so far."""

    def __init__(self, rate: float | None, clock: Any = time.monotonic) -> None:
        self.limit = rate
        self.rate = rate
        self._limiter = AsyncLimiter(rate, 1.0) if rate else None
        self._clock = clock
        self._started = clock()
        self._taken = 0

    async def take(self, n: int) -> None:
        self._taken += n
        limiter = self._limiter
        while limiter is not None and n > 0:
            chunk = min(n, max(1, int(limiter.max_rate)))
            await limiter.acquire(chunk)
            n -= chunk

    def throttled(self) -> None:
        measured = self._taken / max(self._clock() - self._started, 1e-3)
        self._set(max(1.0, (self.rate or measured) / 2))

    def calm(self) -> None:
        if self.rate is None:
            return
        raised = self.rate * 1.1
        if self.limit is not None:
            raised = min(raised, self.limit)
        self._set(raised)

    def _set(self, rate: float) -> None:
        if rate != self.rate:
            self.rate = rate
            self._limiter = AsyncLimiter(rate, 1.0)


@dataclass
class _Page:
    task: asyncio.Task[tuple[int, int, int, int]]
    position: str | None
    read: int
    rejected: int
    keys: list[str] = field(default_factory=list)


class Backfill:
    def __init__(
        self,
        job: Job,
        *,
        segment: Segment,
        checkpoints: Checkpoints,
        rejects: IO[bytes],
        redactor: Redactor,
        progress: Progress,
        rate: float | None = None,
        concurrency: int = 4,
        late_write_seconds: float = 30.0,
    ) -> None:
        if concurrency < 1:
            raise ConfigError(f"--concurrency {concurrency}: must be at least 1")
        if rate is not None and rate <= 0:
            raise ConfigError(f"--rate {rate:g}: must be more than 0 records/s")
        self.job = job
        self.segment = segment
        self._checkpoints = checkpoints
        self._rejects = rejects
        self._redactor = redactor
        self._progress = progress
        self._pacer = Pacer(rate)
        self._concurrency = concurrency
        self._late = late_write_seconds
        self._retry = RetryPolicy(max_attempts=MAX_PAGE_ATTEMPTS, base_delay=0.2, max_delay=10.0)
        schema = job.parts.schema
        self._schema = schema
        self.name = (
            f"backfill-{job.name}-{job.source}-to-{job.target}-{segment.index}of{segment.total}"
        )

    async def run(self, *, resume: bool, restart: bool) -> BackfillResult:
        started = time.monotonic()
        state = await self._checkpoints.load(self.name)
        if state is not None and not (resume or restart):
            raise ConfigError(
                f"a checkpoint of this backfill exists ({self.name}): pass --resume to go on "
                "from it or --restart to start over"
            )
        if state is None or restart:
            state = {"position": None, "done": False, "counts": {}}
        result = BackfillResult(self.segment, resumed=state.get("position") is not None)
        for name, value in state.get("counts", {}).items():
            if hasattr(result, name) and isinstance(value, int):
                setattr(result, name, value)
        if state.get("done"):
            result.already_done = True
            result.seconds = time.monotonic() - started
            return result
        await self._checkpoints.save(self.name, {**state, "started_at": time.time()})
        pages: collections.deque[_Page] = collections.deque()
        source = self.job.source_store
        try:
            async for page in source.scan_pages(
                self.segment.index, self.segment.total, after=state.get("position")
            ):
                good = self._screen(page.records)
                await self._pacer.take(len(good))
                task = spawn(self._copy(good), name="backfill-page")
                pages.append(
                    _Page(task, page.position, len(page.records), len(page.records) - len(good))
                )
                while pages and (len(pages) >= self._concurrency or pages[0].task.done()):
                    await self._finish(pages.popleft(), result, state)
            while pages:
                await self._finish(pages.popleft(), result, state)
        finally:
            for pending in pages:
                pending.task.cancel()
            if pages:
                await asyncio.gather(*(p.task for p in pages), return_exceptions=True)
            result.seconds = time.monotonic() - started
        state["done"] = True
        await self._checkpoints.save(self.name, state)
        return result

    async def _finish(self, page: _Page, result: BackfillResult, state: dict[str, Any]) -> None:
        written, retried, throttled, left = await page.task
        result.read += page.read
        result.rejected += page.rejected
        result.written += written
        result.retried += retried
        result.throttled += throttled
        result.left_to_repair += left
        state["position"] = page.position
        state["counts"] = result.counts()
        state["done"] = page.position is None
        await self._checkpoints.save(self.name, state)
        self._progress.advance(
            page.read, written=written, rejected=page.rejected, retried=retried,
            throttled=throttled, left_to_repair=left,
        )  # fmt: skip

    # --- one page -----------------------------------------------------------------------

    def _screen(self, records: Sequence[Record]) -> list[Record]:
        """The records that fit the schema; the others to the rejects file."""
        good = []
        for record in records:
            reason, fields = self._reject_reason(record)
            if reason is None:
                good.append(record)
                continue
            key = record.get(self._schema.key)
            line = {
                "key": self._key_text(key),
                "segment": str(self.segment),
                "reason": reason,
                "fields": fields,
            }
            self._rejects.write(orjson.dumps(line, default=str) + b"\n")
        if len(good) < len(records):
            self._rejects.flush()
        return good

    def _reject_reason(self, record: Record) -> tuple[str | None, list[dict[str, Any]]]:
        schema = self._schema
        errors = schema.stored_errors(record)
        if errors:
            fields = []
            for error in errors:
                name = error["field"]
                root = name.split(".", 1)[0].split("[", 1)[0]
                value = error["value"]
                if root in schema.sensitive_fields:
                    value = self._redactor.value(schema.to_json(record, fields=[root])[root])
                fields.append({"field": name, "message": error["message"], "value": value})
            return str(SchemaError(errors)), fields
        try:
            check_record_size(schema, record)
        except LimitExceeded as e:
            return str(e), []
        return None, []

    def _key_text(self, key: Any) -> str:
        text = self.job.parts.key_text(key)
        if self._schema.key in self._schema.sensitive_fields:
            return self._redactor.value(text)
        return text

    async def _copy(self, records: list[Record]) -> tuple[int, int, int, int]:
        """Copy one page; (written, retried, throttled, left to the repair log)."""
        if not records:
            return 0, 0, 0, 0
        parts, job = self.job.parts, self.job
        key_field = self._schema.key
        items: list[tuple[Any, Record | None]] = [(r[key_field], r) for r in records]
        texts = [parts.key_text(k) for k, _ in items]
        loop = asyncio.get_running_loop()
        intents = None
        deadline = float("inf")
        if job.repair_log is not None:
            # As a dual write: done (or escalated) within half the intent grace, so no
            # repairer takes the intents while this copy is still on its way.
            deadline = loop.time() + job.repair_log.intent_grace_seconds / 2
            intents = await job.repair_log.intend(job.name, texts, op="backfill")
        retried = throttled = 0
        seen = _throttles(job.target_store)
        todo = list(range(len(items)))
        attempt = 0
        while True:
            attempt += 1
            batch = [items[n] for n in todo]
            try:
                with no_retry_of_unknown_writes():
                    async with asyncio.timeout_at(None if intents is None else deadline):
                        failed = await copy_batch(
                            job.source_store, job.target_store, batch, parts.key_text,
                            key_field=key_field,
                        )  # fmt: skip
            except TimeoutError as e:
                failed = dict.fromkeys(range(len(batch)), e)
            failures: dict[int, BaseException] = {todo[n]: e for n, e in failed.items()}
            now = _throttles(job.target_store)
            if now > seen or any(isinstance(e, Throttled) for e in failures.values()):
                # The target said slow down, even if its retries got the batch through.
                throttled += max(1, now - seen)
                self._pacer.throttled()
            elif not failures:
                self._pacer.calm()
            seen = now
            if not failures:
                break
            unknown = any(outcome_unknown(e) for e in failures.values())
            # A write of unknown outcome may still land: a retry must come after it.
            delay = self._late if unknown else self._retry.delay(attempt)
            if attempt >= MAX_PAGE_ATTEMPTS or loop.time() + delay >= deadline - 1.0:
                break
            retried += len(failures)
            todo = sorted(failures)
            await asyncio.sleep(delay)
        if intents is not None:
            await job.repair_log.settle(  # type: ignore[union-attr]
                [i for n, i in enumerate(intents) if n not in failures]
            )
        if not failures:
            return len(items), retried, throttled, 0
        if intents is None:
            error = next(iter(failures.values()))
            raise BackfillFailed(
                f"{len(failures)} records of a page could not be copied to {job.target} "
                f"after {attempt} attempts: {type(error).__name__}: {error}"
            )
        assert job.repair_log is not None  # intents came from it
        for n, error in failures.items():
            reason = f"backfill to {job.target} failed: {type(error).__name__}: {error}"[:300]
            await escalate_writes(
                job.repair_log, job.name, [(intents[n], texts[n])], reason,
                late=outcome_unknown(error), op="backfill",
            )  # fmt: skip
        return len(items) - len(failures), retried, throttled, len(failures)


def _throttles(store: Any) -> int:
    """Throttling answers a store saw so far (DynamoDB counts them; others never throttle)."""
    return int(getattr(store, "throttles", 0))


def open_rejects(path: Path, *, append: bool) -> IO[bytes]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("ab" if append else "wb")
