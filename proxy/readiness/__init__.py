"""Readiness: is it safe to flip reads to the new store (and later, to stop writing the old)?

Every comparison is counted by a ``ReadinessRecorder`` into time buckets of a window store
(``MemoryWindow`` for one instance, ``RedisWindow`` summed over every instance); a verdict
is a pure function of the window's ``WindowTotals`` and a ``ReadinessConfig``. Definitions:
``proxy.readiness.config`` (which outcome counts as what), ``proxy.readiness.verdict`` (the
criteria), ``proxy.readiness.window`` (buckets, Redis keys), ``proxy.readiness.histogram``
(latency buckets, quantiles), ``proxy.readiness.verify_results`` (full-table verify results,
which the stop-old-writes verdict needs).
"""

from proxy.readiness.config import RESOURCE_OPERATIONS, ReadinessConfig
from proxy.readiness.metrics import ReadinessMetrics
from proxy.readiness.recorder import ReadinessRecorder
from proxy.readiness.service import Readiness
from proxy.readiness.totals import NEW, OLD, WindowTotals
from proxy.readiness.verdict import (
    FLIP_READS,
    STOP_OLD_WRITES,
    Criterion,
    Verdict,
    WriteFacts,
    refusal,
    render_text,
    to_dict,
    to_json,
    verdict,
    wilson_upper,
    write_verdict,
)
from proxy.readiness.verify_results import (
    VerifyResult,
    VerifyResults,
    VerifyResultsError,
    open_verify_results,
)
from proxy.readiness.window import MemoryWindow, RedisWindow, Window, make_window

__all__ = [
    "FLIP_READS",
    "NEW",
    "OLD",
    "RESOURCE_OPERATIONS",
    "STOP_OLD_WRITES",
    "Criterion",
    "MemoryWindow",
    "Readiness",
    "ReadinessConfig",
    "ReadinessMetrics",
    "ReadinessRecorder",
    "RedisWindow",
    "Verdict",
    "VerifyResult",
    "VerifyResults",
    "VerifyResultsError",
    "Window",
    "WindowTotals",
    "WriteFacts",
    "make_window",
    "open_verify_results",
    "refusal",
    "render_text",
    "to_dict",
    "to_json",
    "verdict",
    "wilson_upper",
    "write_verdict",
]
