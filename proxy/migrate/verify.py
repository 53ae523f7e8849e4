"""``shadowproxy verify``: prove two stores of a resource hold the same records, or say which
keys differ and how.

Three passes over one segment, each a page at a time, so memory stays flat whatever the
table's size:

1. **source**: walk the source segment in pages (PostgreSQL: key order; DynamoDB: a parallel
   scan segment) and batch-get the same keys from the target. Each pair is compared as the
   live proxy compares reads: canonical records through the resource's comparison rules.
   A key the target lacks is *missing*; a pair that differs is *differing*.
2. **target**: walk the target segment and batch-get those keys from the source; a key the
   source lacks is *extra*.
3. **re-check**: every key found above (kept in a temporary file, not in memory) is read
   again from both stores after ``recheck_delay``, up to three times. Equal now: a write was
   on its way, not a difference. Still different while the repair log says a write of the
   key is unsettled: *in flight* (the result is not clean; verify those keys again with
   ``--keys``). Still different and quiet: a difference, written to the output with its
   field-level differences (sensitive values as keyed hashes).

The segments of one ``--segment i/N`` total partition each store, so N processes together
compare every key exactly once.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from comparators import compare
from comparators.model import Outcome
from comparators.redact import Redactor
from proxy.migrate.job import Job, Segment
from proxy.migrate.progress import Progress
from proxy.store.base import Record

CHUNK = 100
RECHECKS = 3


@dataclass
class VerifyOutcome:
    resource: str
    source: str
    target: str
    segment: Segment
    started_at: float
    finished_at: float = 0.0
    source_records: int = 0
    target_records: int = 0
    missing: int = 0
    extra: int = 0
    differing: int = 0
    in_flight: int = 0
    settled_meanwhile: int = 0
    keys_only: bool = False
    """A ``--keys`` run: only listed keys were compared (not a full-table result)."""
    top_fields: Counter[str] = field(default_factory=Counter)

    @property
    def clean(self) -> bool:
        return self.missing == self.extra == self.differing == self.in_flight == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "source": self.source,
            "target": self.target,
            "segment": str(self.segment),
            "keys_only": self.keys_only,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "source_records": self.source_records,
            "target_records": self.target_records,
            "missing": self.missing,
            "extra": self.extra,
            "differing": self.differing,
            "in_flight": self.in_flight,
            "settled_meanwhile": self.settled_meanwhile,
            "clean": self.clean,
            "top_fields": dict(self.top_fields.most_common(20)),
        }

    def summary(self) -> list[str]:
        seconds = self.finished_at - self.started_at
        what = "listed keys" if self.keys_only else f"segment {self.segment}"
        lines = [
            f"verify {self.resource} ({what}): {self.source} {self.source_records} records, "
            f"{self.target} {self.target_records} records, {seconds:.1f}s",
            f"  missing in {self.target}: {self.missing}",
            f"  only in {self.target} (extra): {self.extra}",
            f"  differing: {self.differing}",
        ]
        if self.in_flight:
            lines.append(f"  writes in flight at every re-check: {self.in_flight}")
        if self.settled_meanwhile:
            lines.append(f"  equal on re-check (writes on their way): {self.settled_meanwhile}")
        if self.top_fields:
            top = ", ".join(f"{name} ({n})" for name, n in self.top_fields.most_common(5))
            lines.append(f"  top differing fields: {top}")
        lines.append("  CLEAN: the stores are equal" if self.clean else "  NOT CLEAN")
        return lines


class Verify:
    def __init__(
        self,
        job: Job,
        *,
        segment: Segment,
        redactor: Redactor,
        progress: Progress,
        output: IO[bytes] | None = None,
        recheck_delay: float = 1.0,
    ) -> None:
        self.job = job
        self.segment = segment
        self._redactor = redactor
        self._progress = progress
        self._output = output
        self._recheck_delay = recheck_delay
        self._schema = job.parts.schema
        self.differences: list[str] = []
        """Keys (text) found different, in the order found (for ``--repair``)."""

    # --- the passes ---------------------------------------------------------------------

    async def run(self) -> VerifyOutcome:
        job = self.job
        outcome = VerifyOutcome(job.name, job.source, job.target, self.segment, time.time())
        with tempfile.TemporaryFile() as suspects:
            await self._source_pass(outcome, suspects)
            await self._target_pass(outcome, suspects)
            suspects.seek(0)
            await self._recheck(outcome, _lines(suspects))
        outcome.finished_at = time.time()
        return outcome

    async def run_keys(self, keys: Sequence[str]) -> VerifyOutcome:
        job = self.job
        outcome = VerifyOutcome(
            job.name, job.source, job.target, self.segment, time.time(), keys_only=True
        )
        for start in range(0, len(keys), CHUNK):
            chunk = [self._schema.parse_key(k) for k in keys[start : start + CHUNK]]
            source, target = await self._both(chunk)
            outcome.source_records += len(source)
            outcome.target_records += len(target)
        self._recheck_delay = 0.0  # nothing to wait for: no pass ran before
        await self._recheck(outcome, list(keys))
        outcome.finished_at = time.time()
        return outcome

    async def _source_pass(self, outcome: VerifyOutcome, suspects: IO[bytes]) -> None:
        job, text = self.job, self.job.parts.key_text
        async for page in job.source_store.scan_pages(self.segment.index, self.segment.total):
            outcome.source_records += len(page.records)
            keys = [r[self._schema.key] for r in page.records]
            found = await _by_key(job.target_store, keys, text, self._schema.key)
            odd = 0
            for record in page.records:
                other = found.get(text(record[self._schema.key]))
                if other is None or self._differs(record, other):
                    suspects.write(text(record[self._schema.key]).encode() + b"\n")
                    odd += 1
            self._progress.advance(len(page.records), compared=len(page.records), suspect=odd)

    async def _target_pass(self, outcome: VerifyOutcome, suspects: IO[bytes]) -> None:
        job, text = self.job, self.job.parts.key_text
        async for page in job.target_store.scan_pages(self.segment.index, self.segment.total):
            outcome.target_records += len(page.records)
            keys = [r[self._schema.key] for r in page.records]
            found = await _by_key(job.source_store, keys, text, self._schema.key)
            extra = [text(k) for k in keys if text(k) not in found]
            for key in extra:
                suspects.write(key.encode() + b"\n")
            self._progress.advance(len(page.records), scanned=len(page.records), suspect=len(extra))

    async def _recheck(self, outcome: VerifyOutcome, keys: Iterable[str]) -> None:
        chunk: list[str] = []
        waited = False
        for key in keys:
            chunk.append(key)
            if len(chunk) == CHUNK:
                waited = await self._recheck_chunk(outcome, chunk, waited)
                chunk = []
        if chunk:
            await self._recheck_chunk(outcome, chunk, waited)

    async def _recheck_chunk(self, outcome: VerifyOutcome, texts: list[str], waited: bool) -> bool:
        pending = list(dict.fromkeys(texts))
        for attempt in range(RECHECKS):
            if self._recheck_delay and (attempt or not waited):
                await asyncio.sleep(self._recheck_delay)
            waited = True
            keys = [self._schema.parse_key(k) for k in pending]
            source, target = await self._both(keys)
            still = []
            for text in pending:
                a, b = source.get(text), target.get(text)
                if a is not None and b is not None and not self._differs(a, b):
                    continue
                if a is None and b is None:
                    continue
                still.append(text)
            outcome.settled_meanwhile += len(pending) - len(still)
            if not still:
                return waited
            busy = await self._busy(still)
            quiet = [k for k in still if k not in busy]
            for text in quiet:
                self._report(outcome, text, source.get(text), target.get(text))
            pending = [k for k in still if k in busy]
            if not pending:
                return waited
        outcome.in_flight += len(pending)
        return waited

    # --- comparing ----------------------------------------------------------------------

    async def _both(self, keys: Sequence[Any]) -> tuple[dict[str, Record], dict[str, Record]]:
        job, text, key = self.job, self.job.parts.key_text, self._schema.key
        source, target = await asyncio.gather(
            _by_key(job.source_store, keys, text, key), _by_key(job.target_store, keys, text, key)
        )
        return source, target

    async def _busy(self, keys: Sequence[str]) -> set[str]:
        log = self.job.repair_log
        if log is None:
            return set()
        busy = set()
        for key in keys:
            if not (await log.unsettled(self.job.name, [key])).quiet:
                busy.add(key)
        return busy

    def _differs(self, a: Record, b: Record) -> bool:
        schema = self._schema
        if schema.dumps(a) == schema.dumps(b):
            return False
        return self._compare(a, b).outcome is not Outcome.MATCH

    def _compare(self, a: Record | None, b: Record | None) -> Any:
        schema = self._schema
        left = None if a is None else schema.to_json(a, drift=True)
        right = None if b is None else schema.to_json(b, drift=True)
        return compare(left, right, self.job.parts.record_rules)

    def _report(
        self, outcome: VerifyOutcome, key: str, source: Record | None, target: Record | None
    ) -> None:
        if target is None:
            kind = "missing"
            outcome.missing += 1
            fields: list[dict[str, Any]] = []
        elif source is None:
            kind = "extra"
            outcome.extra += 1
            fields = []
        else:
            kind = "differs"
            outcome.differing += 1
            comparison = self._compare(source, target)
            fields = []
            for difference in comparison.differences:
                shown = self._redactor.difference(difference)
                fields.append(
                    {
                        "path": shown.path,
                        "kind": shown.kind,
                        self.job.source: shown.primary,
                        self.job.target: shown.shadow,
                    }
                )
            outcome.top_fields.update(comparison.fields)
        self.differences.append(key)
        if self._output is not None:
            shown_key = key
            if self._schema.key in self._schema.sensitive_fields:
                shown_key = self._redactor.value(key)
            line = {"key": shown_key, "kind": kind, "fields": fields}
            self._output.write(orjson.dumps(line, default=str) + b"\n")


async def _by_key(store: Any, keys: Sequence[Any], text: Any, key_field: str) -> dict[str, Record]:
    if not keys:
        return {}
    return {text(r[key_field]): r for r in await store.batch_get(keys)}


def _lines(f: IO[bytes]) -> Iterable[str]:
    for raw in f:
        line = raw.strip()
        if line:
            yield line.decode()
