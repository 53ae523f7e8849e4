"""Process metrics (CPU, memory, file descriptors) of ``serve --workers N``, over its workers.

    WorkerProcessCollector(os.environ["PROMETHEUS_MULTIPROC_DIR"], registry=served)

prometheus-client's ``ProcessCollector`` reads ``/proc`` for one process. With workers, the
one answering ``/metrics`` changes from scrape to scrape, so its own figures would jump
about (and ``process_cpu_seconds_total`` would look reset at every other scrape). Here the
answering worker reads ``/proc`` for every worker and reports the instance: CPU seconds,
memory and open descriptors summed, the earliest start time, the lowest descriptor limit.

The workers are the processes that write metric files into the multiprocess directory
(``<kind>_<pid>.db``) and share this process's parent (the ``serve`` that started them):
the leftover files of a worker that died, or its pid taken by an unrelated process, do not
count.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

METRIC_FILE = re.compile(r"_(\d+)\.db$")
# How a value combines over workers; every other one is summed.
COMBINE: dict[str, Callable[[Iterable[float]], float]] = {
    "process_start_time_seconds": min,
    "process_max_fds": min,
}


class WorkerProcessCollector(Collector):
    def __init__(
        self,
        directory: str,
        *,
        proc: str = "/proc",
        parent: int | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._directory = Path(directory)
        self._proc = proc
        self._parent = os.getppid() if parent is None else parent
        self._collectors: dict[int, ProcessCollector] = {}
        if registry is not None:
            registry.register(self)

    def workers(self) -> list[int]:
        """The pids of the live workers, sorted."""
        try:
            names = os.listdir(self._directory)
        except OSError:
            return []
        pids = {int(m.group(1)) for name in names if (m := METRIC_FILE.search(name))}
        return sorted(pid for pid in pids if self._parent_of(pid) == self._parent)

    def collect(self) -> Iterable[Metric]:
        pids = self.workers()
        self._collectors = {pid: self._collector(pid) for pid in pids}
        values: dict[str, list[float]] = {}
        families: dict[str, Metric] = {}
        for collector in self._collectors.values():
            for family in collector.collect():
                families.setdefault(family.name, family)
                values.setdefault(family.name, []).extend(s.value for s in family.samples)
        return [_combined(families[name], found) for name, found in values.items()]

    def _collector(self, pid: int) -> ProcessCollector:
        known = self._collectors.get(pid)
        if known is not None:
            return known
        return ProcessCollector(pid=lambda: pid, proc=self._proc, registry=None)

    def _parent_of(self, pid: int) -> int | None:
        try:
            with open(os.path.join(self._proc, str(pid), "stat"), "rb") as stat:
                # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
                fields = stat.read().rsplit(b")", 1)[1].split()
            return int(fields[1])
        except (OSError, IndexError, ValueError):
            return None


def _combined(family: Metric, values: list[float]) -> Metric:
    value = COMBINE.get(family.name, sum)(values)
    if family.type == "counter":
        return CounterMetricFamily(family.name, family.documentation, value=value)
    return GaugeMetricFamily(family.name, family.documentation, value=value)
