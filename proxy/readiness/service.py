"""One object for the lead to wire: the window, the recorder, metrics and the verdicts.

    readiness = Readiness(settings.readiness, metrics=ReadinessMetrics.create(registry))
    readiness.start()
    # Publisher, for every comparison:
    readiness.record(exp.route, exp.operation, exp.comparison.outcome,
                     exp.primary_seconds, exp.shadow_seconds, new_side="shadow")
    # GET /readiness, `shadowproxy readiness`, the flip gate:
    v = await readiness.evaluate("users", required_operations=config.operations_for(
        RESOURCE_OPERATIONS))
    w = await readiness.evaluate_writes("users", required_operations=...,
                                        facts=WriteFacts(read_from="dynamodb", ...))
    await readiness.close()

With ``store: memory`` only this process's counts exist: a separate CLI process sees nothing
(it should ask the running proxy's ``GET /readiness``, or the config should use Redis).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from proxy.readiness.config import ReadinessConfig
from proxy.readiness.metrics import ReadinessMetrics
from proxy.readiness.recorder import ReadinessRecorder
from proxy.readiness.totals import WindowTotals
from proxy.readiness.verdict import Criterion, Verdict, WriteFacts, verdict, write_verdict
from proxy.readiness.window import Window, make_window


class Readiness:
    def __init__(
        self,
        config: ReadinessConfig,
        *,
        window: Window | None = None,
        metrics: ReadinessMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.window: Window = make_window(config) if window is None else window
        self._owns_window = window is None
        self._metrics = metrics
        self._clock = clock
        self.recorder = ReadinessRecorder(
            self.window,
            flush_interval_seconds=config.flush_interval_seconds,
            clock=clock,
            metrics=metrics,
        )
        self.record = self.recorder.record

    def start(self) -> None:
        self.recorder.start()

    async def close(self) -> None:
        """Flush what is left; close the window if this object made it."""
        await self.recorder.close()
        if self._owns_window:
            await self.window.close()

    async def totals(self, target: str) -> WindowTotals:
        """This process's pending counts flushed first, then the window read (other
        instances' counts are at most one flush interval old)."""
        await self.recorder.flush()
        return await self.window.read(target, self._clock())

    async def evaluate(
        self,
        target: str,
        *,
        required_operations: Iterable[str],
        extra_criteria: Iterable[Criterion] = (),
    ) -> Verdict:
        """The read-flip verdict; exported as ``shadowproxy_readiness_ready{target}``."""
        result = verdict(
            await self.totals(target),
            self.config,
            required_operations=required_operations,
            extra_criteria=extra_criteria,
        )
        if self._metrics is not None:
            self._metrics.observe(result)
        return result

    async def evaluate_writes(
        self, target: str, *, required_operations: Iterable[str], facts: WriteFacts
    ) -> Verdict:
        """The stop-old-writes verdict (not exported as a metric); ``facts`` are gathered by
        the caller (``proxy.control.decisions``)."""
        return write_verdict(
            await self.totals(target),
            self.config,
            required_operations=required_operations,
            facts=facts,
        )
