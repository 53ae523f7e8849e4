"""The backfill's pace under throttling, and how a job shows its progress off a terminal."""

from __future__ import annotations

import io
import logging

import pytest

from proxy.migrate.backfill import Pacer
from proxy.migrate.job import Segment, parse_segment
from proxy.migrate.progress import JobMetrics, Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_throttle_halves_the_rate_and_calm_pages_raise_it_back_to_the_limit() -> None:
    pacer = Pacer(1000.0)
    pacer.throttled()
    assert pacer.rate == 500.0
    pacer.throttled()
    assert pacer.rate == 250.0
    for _ in range(100):
        pacer.calm()
    assert pacer.rate == 1000.0  # never above --rate


async def test_without_a_rate_a_throttle_sets_one_from_the_pace_so_far() -> None:
    clock = Clock()
    pacer = Pacer(None, clock=clock)
    await pacer.take(4000)
    clock.now += 2.0  # 2,000 records/s so far
    pacer.throttled()
    assert pacer.rate == pytest.approx(1000.0)
    pacer.calm()
    assert pacer.rate == pytest.approx(1100.0)


async def test_take_waits_for_the_rate() -> None:
    import time

    pacer = Pacer(200.0)
    started = time.monotonic()
    await pacer.take(200)  # the bucket starts full
    await pacer.take(100)  # half a second more at 200/s
    assert time.monotonic() - started >= 0.3


def test_off_a_terminal_progress_is_a_log_line_now_and_then(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    metrics = JobMetrics()
    shown = Progress("backfill", "users", stream=io.StringIO(), metrics=metrics, clock=clock,
                     log_seconds=10)  # fmt: skip
    with caplog.at_level(logging.INFO, logger="shadowproxy.jobs"):
        shown.advance(500, written=498, rejected=2)
        assert caplog.records == []  # not yet: at most one line per log_seconds
        clock.now += 11
        shown.advance(500, written=500)
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("backfill users: 1000 records in 11.0s")
    assert "998 written" in line and "2 rejected" in line
    value = metrics.registry.get_sample_value(
        "shadowproxy_job_records_total",
        {"job": "backfill", "resource": "users", "result": "written"},
    )
    assert value == 998


@pytest.mark.parametrize(
    ("text", "expected"), [("0/1", Segment(0, 1)), ("7/8", Segment(7, 8)), (" 2/ 4", Segment(2, 4))]
)
def test_segments_parse(text: str, expected: Segment) -> None:
    assert parse_segment(text) == expected


@pytest.mark.parametrize("text", ["", "1", "1/1", "-1/4", "a/b", "2/0", "1/2/3"])
def test_bad_segments_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="segment"):
        parse_segment(text)
