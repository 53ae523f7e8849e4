"""The HTML report's charts as plain geometry (bars, labels, lines in SVG user units); the
template draws them as inline SVG, escaping every label. No JavaScript, no external asset."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from proxy.report import fmt
from proxy.report.model import FieldCount, Latency, TimeBucket

WIDTH = 720
ROW = 22
LABEL_CHARS = 44


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str
    css: str = ""


@dataclass(frozen=True)
class Label:
    x: float
    y: float
    text: str
    anchor: str = "start"
    css: str = ""


@dataclass(frozen=True)
class Line:
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True)
class Chart:
    kind: str
    title: str
    width: int
    height: int
    bars: tuple[Bar, ...]
    labels: tuple[Label, ...] = ()
    lines: tuple[Line, ...] = ()


def _r(value: float) -> float:
    return round(value, 1)


def _clock(at: float, step: int) -> str:
    return time.strftime("%m-%d %H:%M" if step < 86400 else "%Y-%m-%d", time.gmtime(at))


def timeline(buckets: Sequence[TimeBucket], step: int, name: str) -> Chart:
    """Mismatch records per bucket, one bar each, oldest on the left."""
    left, right, top, bottom, height = 44.0, 8.0, 12.0, 26.0, 170
    plot_w, plot_h = WIDTH - left - right, height - top - bottom
    most = max((b.mismatches for b in buckets), default=0)
    peak = most or 1
    slot = plot_w / max(1, len(buckets))
    bars = tuple(
        Bar(
            _r(left + i * slot + slot * 0.1),
            _r(top + plot_h - plot_h * b.mismatches / peak),
            _r(slot * 0.8),
            _r(plot_h * b.mismatches / peak),
            f"{fmt.duration(step)} from {_clock(b.start, 0)} UTC: {b.mismatches} mismatch records",
            "bar-mismatch",
        )
        for i, b in enumerate(buckets)
        if b.mismatches
    )
    base = top + plot_h
    labels = [
        Label(left - 6, top + 4, f"{most:,}", "end"),
        Label(left - 6, base, "0", "end"),
    ]
    if buckets:
        labels += [
            Label(left, height - 8, _clock(buckets[0].start, step) + " UTC"),
            Label(WIDTH - right, height - 8, _clock(buckets[-1].start + step, step), "end"),
        ]
    axes = (Line(left, top, left, base), Line(left, base, WIDTH - right, base))
    title = f"{name}: mismatch records per {fmt.duration(step)}"
    return Chart("timeline", title, WIDTH, height, bars, tuple(labels), axes)


def _hbars(kind: str, title: str, rows: Sequence[tuple[str, float, str, str]]) -> Chart:
    """Horizontal bars: (label, value, value text, css class) per row."""
    left, right = 280.0, 90.0
    plot_w = WIDTH - left - right
    peak = max((v for _, v, _, _ in rows), default=0.0) or 1.0
    bars, labels = [], []
    for i, (label, value, shown, css) in enumerate(rows):
        y = 6 + i * ROW
        length = plot_w * value / peak
        cut = label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"
        labels.append(Label(left - 8, y + 14, cut, "end"))
        bars.append(Bar(left, y + 3, _r(max(length, 1.0)), ROW - 6, f"{label}: {shown}", css))
        labels.append(Label(_r(left + length + 6), y + 14, shown, "start", "value"))
    height = 12 + len(rows) * ROW
    return Chart(kind, title, WIDTH, height, tuple(bars), tuple(labels))


def latency(sides: Sequence[Latency], name: str) -> Chart:
    """p50 and p99 of every side, on one scale."""
    rows = []
    for lat in sides:
        who = f"{lat.side} ({', '.join(lat.backends)})" if lat.backends else lat.side
        rows.append((f"{who} p50", lat.p50_seconds or 0.0, fmt.ms(lat.p50_seconds), "bar-p50"))
        rows.append((f"{who} p99", lat.p99_seconds or 0.0, fmt.ms(lat.p99_seconds), "bar-p99"))
    return _hbars("latency", f"{name}: latency per side", rows)


def fields(found: Sequence[FieldCount], name: str) -> Chart:
    """The top differing fields by the records they differ in (the counter when there are
    no records)."""
    rows = [
        (f.field, float(f.records or f.counter or 0), _field_text(f), "bar-field") for f in found
    ]
    return _hbars("fields", f"{name}: top differing fields", rows)


def _field_text(f: FieldCount) -> str:
    if f.records or f.counter is None:
        return f"{f.records:,} records"
    return f"{f.counter:,} counted"
