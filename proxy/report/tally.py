"""What the window's mismatch records add up to, per resource or route: how many, which
fields differ in how many of them, when they happened, and the most recent few kept whole."""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from comparators.paths import collapse_indexes
from proxy.report.model import Window
from proxy.report.window import record_time

# Bucket widths of the timeline; the smallest that gives at most MAX_BUCKETS buckets.
STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 604800)
MAX_BUCKETS = 48


def bucket_seconds(win: Window) -> int:
    return next((s for s in STEPS if win.seconds / s <= MAX_BUCKETS), STEPS[-1])


def target_of(record: dict[str, Any]) -> str:
    """Store mode records name their resource; HTTP ones only the route."""
    resource = record.get("resource")
    return resource if isinstance(resource, str) and resource else str(record["route"])


NOISE = "noise"


@dataclass
class TargetTally:
    examples_kept: int
    records: int = 0
    #: records of outcome ``noise`` (differences only in learned noise): counted apart,
    #: never in ``records``, the fields, the timeline or the examples
    noise_records: int = 0
    fields: Counter[str] = field(default_factory=Counter)
    buckets: Counter[int] = field(default_factory=Counter)
    #: the newest ``examples_kept`` records: (time, arrival, record), a min-heap
    newest: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)
    _arrivals: itertools.count[int] = field(default_factory=itertools.count)

    def add(self, record: dict[str, Any], at: float, bucket: int) -> None:
        if record.get("outcome") == NOISE:
            self.noise_records += 1
            return
        self.records += 1
        self.buckets[bucket] += 1
        differences = record.get("differences")
        if isinstance(differences, list):
            paths = (d.get("path") for d in differences if isinstance(d, dict))
            self.fields.update({collapse_indexes(p) for p in paths if isinstance(p, str)})
        if self.examples_kept:
            entry = (at, next(self._arrivals), record)
            if len(self.newest) < self.examples_kept:
                heapq.heappush(self.newest, entry)
            else:
                heapq.heappushpop(self.newest, entry)

    @property
    def recent(self) -> list[dict[str, Any]]:
        """The newest records, newest first (the later written first among equal times)."""
        return [record for _, _, record in sorted(self.newest, reverse=True)]


@dataclass
class Tally:
    win: Window
    examples: int
    step: int = 0
    targets: dict[str, TargetTally] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.step = bucket_seconds(self.win)

    @property
    def origin(self) -> float:
        """The start of the first bucket: the window's start, down to a whole step."""
        return self.win.start - self.win.start % self.step

    def add_all(self, records: Iterable[dict[str, Any]]) -> None:
        for record in records:
            at = record_time(record.get("time")) or self.win.end
            name = target_of(record)
            tally = self.targets.get(name)
            if tally is None:
                tally = self.targets[name] = TargetTally(self.examples)
            tally.add(record, at, int((at - self.origin) // self.step))

    def timeline(self, name: str) -> list[tuple[float, int]]:
        """Every bucket of the window, oldest first, empty ones included."""
        tally = self.targets.get(name)
        count = int((self.win.end - self.origin) // self.step) + 1
        return [
            (self.origin + i * self.step, tally.buckets.get(i, 0) if tally else 0)
            for i in range(count)
        ]
