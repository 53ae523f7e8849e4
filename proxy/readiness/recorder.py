"""The recorder: counts every comparison into the current time bucket, flushes to a window.

    recorder = ReadinessRecorder(window, metrics=metrics)
    recorder.start()                                   # background flush every ~1 s
    recorder.record("users", "get", "match", 0.004, 0.006, new_side="shadow")
    await recorder.close()                             # stops the task, flushes the rest

``record`` is synchronous and cheap (a few dict increments): it runs for every comparison on
the event loop. Latency samples go to side ``new`` or ``old`` by role: ``new_side="shadow"``
while the new store is shadowed, ``"primary"`` after reads were flipped to it.

Which latencies are recorded, by outcome:

- ``match`` / ``mismatch`` / ``transient`` / ``noise``: both sides' seconds (when not ``None``);
- ``shadow_error``: the primary's only (a failed call's duration is not a latency);
- ``timeout``: the primary's, and the shadow side counts in the overflow bucket (slower than
  any bucket, whatever seconds were measured);
- ``primary_error`` / ``dropped`` / ``skipped`` / ``unjudged``: none (store mode reports
  ``0.0`` for a failed primary).

``parsed_match`` (bodies equal once parsed) is counted as a ``match`` and as itself.

A flush that fails (store unreachable) puts its deltas back to be retried with the next one;
deltas for buckets already outside the window are dropped. A failure that happens after Redis
applied the MULTI but before the reply arrived can count that flush twice.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from proxy.logs import Throttle
from proxy.readiness.config import (
    COMPARISON_OUTCOMES,
    MATCH,
    PARSED_MATCH,
    SHADOW_ERROR,
    TIMEOUT,
)
from proxy.readiness.histogram import OVERFLOW, bucket_index
from proxy.readiness.metrics import ReadinessMetrics
from proxy.readiness.totals import NEW, OLD
from proxy.readiness.window import Window
from proxy.tasks import spawn

log = logging.getLogger("shadowproxy.readiness")

ERROR_LOG_SECONDS = 60.0
NEW_SIDES = ("shadow", "primary")


class ReadinessRecorder:
    def __init__(
        self,
        window: Window,
        *,
        flush_interval_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
        metrics: ReadinessMetrics | None = None,
    ) -> None:
        self._window = window
        self._bucket_seconds = window.bucket_seconds
        self._span = math.ceil(window.window_seconds / window.bucket_seconds)
        self._interval = flush_interval_seconds
        self._clock = clock
        self._metrics = metrics
        self._pending: dict[tuple[str, int], dict[str, int]] = {}
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[Any] | None = None
        self._failures = 0
        self._log_throttle = Throttle(ERROR_LOG_SECONDS)

    # --- the hot path ---------------------------------------------------------------------

    def record(
        self,
        target: str,
        operation: str,
        outcome: str,
        primary_seconds: float | None,
        shadow_seconds: float | None,
        *,
        new_side: str,
    ) -> None:
        """Count one finished comparison (see the module docstring)."""
        if new_side == "shadow":
            primary_side, shadow_side = OLD, NEW
        elif new_side == "primary":
            primary_side, shadow_side = NEW, OLD
        else:
            raise ValueError(f"new_side must be 'shadow' or 'primary', not {new_side!r}")
        outcome = str(outcome)
        key = (target, math.floor(self._clock() / self._bucket_seconds))
        fields = self._pending.get(key)
        if fields is None:
            fields = self._pending[key] = {}
        if outcome == PARSED_MATCH:
            name = f"c|{operation}|{PARSED_MATCH}"
            fields[name] = fields.get(name, 0) + 1
            outcome = MATCH
        name = f"c|{operation}|{outcome}"
        fields[name] = fields.get(name, 0) + 1
        if outcome in COMPARISON_OUTCOMES:
            self._latency(fields, primary_side, primary_seconds)
            self._latency(fields, shadow_side, shadow_seconds)
        elif outcome == TIMEOUT:
            self._latency(fields, primary_side, primary_seconds)
            name = f"l|{shadow_side}|{OVERFLOW}"
            fields[name] = fields.get(name, 0) + 1
        elif outcome == SHADOW_ERROR:
            self._latency(fields, primary_side, primary_seconds)

    @staticmethod
    def _latency(fields: dict[str, int], side: str, seconds: float | None) -> None:
        if seconds is None:
            return
        name = f"l|{side}|{bucket_index(seconds)}"
        fields[name] = fields.get(name, 0) + 1

    # --- flushing -------------------------------------------------------------------------

    @property
    def pending_buckets(self) -> int:
        return len(self._pending)

    async def flush(self) -> bool:
        """Push pending deltas to the window; False (deltas kept) when the store failed."""
        if not self._pending:
            return True
        batch, self._pending = self._pending, {}
        try:
            await self._window.add(batch)
        except Exception as e:
            self._restore(batch)
            self._failed(e)
            return False
        return True

    def _restore(self, batch: dict[tuple[str, int], dict[str, int]]) -> None:
        oldest = math.floor(self._clock() / self._bucket_seconds) - self._span
        for key, fields in batch.items():
            if key[1] < oldest:
                continue
            into = self._pending.setdefault(key, {})
            for name, value in fields.items():
                into[name] = into.get(name, 0) + value

    def _failed(self, error: Exception) -> None:
        self._failures += 1
        if self._metrics is not None:
            self._metrics.flush_failures.inc()
        if self._log_throttle.ready():
            log.warning(
                "readiness counters could not be flushed; kept for the next attempt",
                extra={"failures": self._failures, "error": f"{type(error).__name__}: {error}"},
            )

    def start(self) -> None:
        """Start the background flush (idempotent); needs a running event loop."""
        if self._task is not None:
            return
        self._stop = asyncio.Event()
        self._task = spawn(self._run(self._stop), name="readiness-flush")

    async def _run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)
            await self.flush()

    async def close(self) -> None:
        """Stop the background flush and flush what is left (the window stays open)."""
        if self._stop is not None and self._task is not None:
            self._stop.set()
            with suppress(Exception):
                await self._task
            self._task = None
        await self.flush()
