"""The report as one self-contained HTML file: Jinja2 (autoescape on) renders
``proxy/templates/report.html`` with inline CSS and inline SVG charts. A Content-Security-Policy
in the page forbids every load (no script, no external style, font or image), so the file
opens the same anywhere, offline included."""

from __future__ import annotations

from functools import cache

import jinja2

from proxy.report import charts, fmt
from proxy.report.build import OUTCOMES
from proxy.report.model import Report, TargetReport
from proxy.report.render_md import TITLES
from proxy.report.window import iso


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("proxy", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        num=fmt.count, rate=fmt.rate, ms=fmt.ms, measured=fmt.measured, value=fmt.value,
        status=fmt.status, source=fmt.source, duration=fmt.duration, iso=iso, pct=fmt.pct,
    )  # fmt: skip
    return env


def _charts(t: TargetReport) -> dict[str, charts.Chart | None]:
    return {
        "timeline": charts.timeline(t.timeline, t.bucket_seconds, t.name),
        "latency": charts.latency(t.latency, t.name) if t.latency else None,
        "fields": charts.fields(t.fields, t.name) if t.fields else None,
    }


def render(report: Report) -> str:
    template = environment().get_template("report.html")
    return template.render(
        report=report,
        outcomes=OUTCOMES,
        titles=TITLES,
        targets=[(t, _charts(t)) for t in report.targets],
        records=sum(t.records for t in report.targets),
    )
