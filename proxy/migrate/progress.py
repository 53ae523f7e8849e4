"""How a long job (backfill, verify, reconcile) shows where it is.

On a terminal: a live ``tqdm`` bar with the rate and, when the total is known, the ETA. Not
on a terminal (a Kubernetes Job, CI, ``| tee``): a plain log line every ``log_seconds``.
Either way the counts go to the job's Prometheus counters, served by ``--metrics-port`` while
the job runs, and end in one summary line.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TextIO

from prometheus_client import CollectorRegistry, Counter, start_http_server
from tqdm import tqdm

log = logging.getLogger("shadowproxy.jobs")

LOG_SECONDS = 10.0


class JobMetrics:
    """``shadowproxy_job_records_total{job, resource, result}``: records read, written,
    rejected, retried, throttled, differing... as the job counts them."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.records = Counter(
            "shadowproxy_job_records",
            "Records a backfill, verify or reconcile handled, by result.",
            ("job", "resource", "result"),
            registry=self.registry,
        )

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serve ``/metrics`` for as long as the process lives (a scrape target)."""
        start_http_server(port, addr=host, registry=self.registry)


class Progress:
    """Counts of one job run; ``advance(n, read=..., written=...)`` as pages finish."""

    def __init__(
        self,
        job: str,
        resource: str,
        *,
        total: int | None = None,
        initial: int = 0,
        metrics: JobMetrics | None = None,
        stream: TextIO | None = None,
        log_seconds: float = LOG_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.job = job
        self.resource = resource
        self.counts: dict[str, int] = {}
        self._metrics = metrics
        self._stream = stream or sys.stderr
        self._clock = clock
        self._started = clock()
        self._done = initial
        self._log_seconds = log_seconds
        self._next_log = self._started + log_seconds
        self._bar: tqdm[Any] | None = None
        if self._stream.isatty():
            self._bar = tqdm(
                total=total,
                initial=initial,
                desc=f"{job} {resource}",
                unit=" records",
                file=self._stream,
                dynamic_ncols=True,
                smoothing=0.1,
            )

    def advance(self, done: int, **counts: int) -> None:
        """``done`` more records handled; ``counts`` by result."""
        self._done += done
        for name, n in counts.items():
            if n:
                self.counts[name] = self.counts.get(name, 0) + n
                if self._metrics is not None:
                    self._metrics.records.labels(self.job, self.resource, name).inc(n)
        if self._bar is not None:
            self._bar.update(done)
            self._bar.set_postfix(self._postfix(), refresh=False)
        elif self._clock() >= self._next_log:
            self._next_log = self._clock() + self._log_seconds
            log.info("%s %s: %s", self.job, self.resource, self.line())

    def line(self) -> str:
        seconds = max(self._clock() - self._started, 1e-9)
        counts = ", ".join(f"{n} {name}" for name, n in self.counts.items())
        rate = self._done / seconds
        line = f"{self._done} records in {seconds:.1f}s ({rate:,.0f}/s)"
        return f"{line}, {counts}" if counts else line

    def _postfix(self) -> Mapping[str, int]:
        return {k: v for k, v in self.counts.items() if k not in ("read",)}

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@contextmanager
def progress(job: str, resource: str, **options: object) -> Iterator[Progress]:
    shown = Progress(job, resource, **options)  # type: ignore[arg-type]
    try:
        yield shown
    finally:
        shown.close()
