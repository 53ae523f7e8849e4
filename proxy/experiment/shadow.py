"""The shadow runner: bounded queue, bounded concurrency, never waited for by a client.

Every shadow experiment (an HTTP route's or a store resource's) goes through one runner:
``submit()`` either queues the job or drops it and counts the drop; a fixed pool of worker
tasks runs the jobs; any failure in a job is logged and counted, never raised to the caller.

A job submitted with ``gather=True`` (a store read's) is held for ``gather_seconds`` and then
queued with every other job held meanwhile, in one loop turn. Their workers start together,
so their reads by key start in one turn too and share a ``BatchGetItem``
(``proxy.store.dynamo_coalesce``) even when reads arrive a few milliseconds apart, as they do
when a small share of reads is shadowed. A job's timings start when it runs, so the wait is
not in the latency it reports. HTTP jobs are never held: an HTTP shadow has no re-read to
tell a write that landed in between from a mismatch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from comparators.model import Outcome
from proxy.metrics import Metrics
from proxy.tasks import cancel, spawn

log = logging.getLogger("shadowproxy.shadow")

Job = Callable[[], Awaitable[None]]


class ShadowRunner:
    def __init__(
        self,
        *,
        queue_size: int,
        concurrency: int,
        metrics: Metrics,
        gather_seconds: float = 0.0,
    ) -> None:
        self._queue: asyncio.Queue[tuple[str, str, Job]] = asyncio.Queue(queue_size)
        self._queue_size = queue_size
        self._concurrency = concurrency
        self._metrics = metrics
        self._gather = gather_seconds
        self._held: list[tuple[str, str, Job]] = []  # gathered jobs, queued together
        self._release_timer: asyncio.TimerHandle | None = None
        self._workers: list[asyncio.Task[Any]] = []
        self._accepting = False
        self._running = 0

    @property
    def depth(self) -> int:
        """Jobs held or waiting plus jobs running (a job re-checking a mismatch is still
        running)."""
        return len(self._held) + self._queue.qsize() + self._running

    async def start(self) -> None:
        self._accepting = True
        self._workers = [
            spawn(self._work(), name=f"shadow-worker-{i}") for i in range(self._concurrency)
        ]

    def submit(self, route: str, operation: str, job: Job, *, gather: bool = False) -> bool:
        """Queue a job (``gather``: hold it to be queued with others, see above); never
        blocks. False (and counted as dropped) when full or stopping."""
        if not self._accepting:
            self._dropped(route, operation, "shutdown")
            return False
        if len(self._held) + self._queue.qsize() >= self._queue_size:
            self._dropped(route, operation, "queue_full")
            return False
        if gather and self._gather > 0:
            self._held.append((route, operation, job))
            if self._release_timer is None:
                loop = asyncio.get_running_loop()
                self._release_timer = loop.call_later(self._gather, self._release)
        else:
            self._queue.put_nowait((route, operation, job))
        self._metrics.shadow_queue_depth.inc()
        return True

    def _release(self) -> None:
        """Queue every held job in this one turn: idle workers start them together."""
        self._release_timer = None
        held, self._held = self._held, []
        for item in held:
            self._queue.put_nowait(item)  # room was kept for held jobs at submit

    def _dropped(self, route: str, operation: str, reason: str) -> None:
        self._metrics.shadow_dropped.labels(route, reason).inc()
        self._metrics.comparisons.labels(route, operation, Outcome.DROPPED.value).inc()

    async def _work(self) -> None:
        while True:
            route, _, job = await self._queue.get()
            self._running += 1
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                self._metrics.internal_errors.labels("shadow").inc()
                log.exception("shadow job failed", extra={"route": route})
            finally:
                self._running -= 1
                self._metrics.shadow_queue_depth.dec()
                self._queue.task_done()

    async def drain(self, timeout: float) -> None:
        """Stop accepting, give queued work ``timeout`` seconds, then cancel the rest."""
        self._accepting = False
        if self._release_timer is not None:
            self._release_timer.cancel()
            self._release()
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            log.warning("shadow drain timed out", extra={"pending": self._queue.qsize()})
        await cancel(*self._workers)
        while not self._queue.empty():
            route, operation, _ = self._queue.get_nowait()
            self._metrics.shadow_queue_depth.dec()
            self._dropped(route, operation, "shutdown")
        self._workers = []
