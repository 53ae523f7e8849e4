"""What a window store returns: summed counters of one target over the window."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from proxy.readiness import histogram
from proxy.readiness.config import (
    COMPARISON_OUTCOMES,
    MATCH,
    MISMATCH,
    NOISE,
    PRIMARY_ERROR,
    SHADOW_ERROR,
    TIMEOUT,
    TRANSIENT,
)

OLD = "old"
NEW = "new"
SIDES = (OLD, NEW)

COUNT_FIELD = "c"
LATENCY_FIELD = "l"
SEP = "|"


def count_field(operation: str, outcome: str) -> str:
    """``c|<operation>|<outcome>``: one comparison outcome of one operation."""
    return f"{COUNT_FIELD}{SEP}{operation}{SEP}{outcome}"


def latency_field(side: str, index: int) -> str:
    """``l|<side>|<bucket index>``: one latency sample of side ``old`` or ``new``."""
    return f"{LATENCY_FIELD}{SEP}{side}{SEP}{index}"


def _frozen(value: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType(dict(value))


@dataclass(frozen=True)
class WindowTotals:
    """Sums over the window ``(start, end]`` of one target.

    ``counts`` maps ``(operation, outcome)`` to a count; ``latency`` maps a side (``old`` /
    ``new``) to a histogram (bucket index → count, see ``proxy.readiness.histogram``).
    """

    target: str
    counts: Mapping[tuple[str, str], int] = field(default_factory=dict)
    latency: Mapping[str, Mapping[int, int]] = field(default_factory=dict)
    start: float = 0.0
    end: float = 0.0

    @property
    def window_seconds(self) -> float:
        return self.end - self.start

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def from_fields(
        cls, target: str, fields: Iterable[tuple[str, int]], *, start: float, end: float
    ) -> WindowTotals:
        """Sum stored ``(field, value)`` pairs (repeated fields add up); unknown fields are
        ignored so a newer writer cannot break an older reader."""
        counts: dict[tuple[str, str], int] = {}
        latency: dict[str, dict[int, int]] = {}
        for name, value in fields:
            kind, _, rest = name.partition(SEP)
            if kind == COUNT_FIELD:
                operation, sep, outcome = rest.rpartition(SEP)
                if sep:
                    key = (operation, outcome)
                    counts[key] = counts.get(key, 0) + int(value)
            elif kind == LATENCY_FIELD:
                side, sep, index_text = rest.partition(SEP)
                if sep and index_text.isdigit() and int(index_text) <= histogram.OVERFLOW:
                    bins = latency.setdefault(side, {})
                    index = int(index_text)
                    bins[index] = bins.get(index, 0) + int(value)
        return cls(target, counts, latency, start, end)

    @classmethod
    def build(
        cls,
        target: str,
        counts: Mapping[tuple[str, str], int] | None = None,
        *,
        old_seconds: Iterable[float] = (),
        new_seconds: Iterable[float] = (),
        start: float = 0.0,
        end: float = 3600.0,
    ) -> WindowTotals:
        """Totals from plain numbers and latency samples (tests, tools)."""
        latency = {OLD: histogram.of(old_seconds), NEW: histogram.of(new_seconds)}
        return cls(target, dict(counts or {}), latency, start, end)

    # --- derived numbers ------------------------------------------------------------------

    def outcome(self, outcome: str) -> int:
        return sum(n for (_, o), n in self.counts.items() if o == outcome)

    @property
    def by_outcome(self) -> Mapping[str, int]:
        out: dict[str, int] = {}
        for (_, outcome), n in self.counts.items():
            out[outcome] = out.get(outcome, 0) + n
        return _frozen(out)

    @property
    def comparisons(self) -> int:
        """``match + mismatch + transient + noise``."""
        return sum(self.outcome(o) for o in (MATCH, MISMATCH, TRANSIENT, NOISE))

    @property
    def mismatches(self) -> int:
        return self.outcome(MISMATCH)

    @property
    def shadow_failures(self) -> int:
        """``shadow_error + timeout``."""
        return self.outcome(SHADOW_ERROR) + self.outcome(TIMEOUT)

    @property
    def attempts(self) -> int:
        """``comparisons + shadow_error + timeout``."""
        return self.comparisons + self.shadow_failures

    @property
    def primary_errors(self) -> int:
        return self.outcome(PRIMARY_ERROR)

    def comparisons_by_operation(self) -> Mapping[str, int]:
        out: dict[str, int] = {}
        for (operation, outcome), n in self.counts.items():
            if outcome in COMPARISON_OUTCOMES:
                out[operation] = out.get(operation, 0) + n
        return _frozen(out)

    def operations_seen(self) -> frozenset[str]:
        """Operations with at least one comparison: one that only ever failed on the shadow
        (or was dropped, skipped) has not been compared, so it does not count as exercised."""
        return frozenset(op for op, n in self.comparisons_by_operation().items() if n > 0)

    def latency_of(self, side: str) -> Mapping[int, int]:
        return self.latency.get(side, {})

    def p(self, side: str, q: float) -> float | None:
        """Quantile ``q`` of ``side`` (``None`` without samples)."""
        return histogram.quantile(self.latency_of(side), q)
