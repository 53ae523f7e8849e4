"""``shadowproxy report``: what the shadow comparisons say, per resource or route, as
Markdown, one self-contained HTML file or JSON (docs/report.schema.json).

The parts, each in its module: ``records`` reads the window's mismatch records back from the
sink and ``tally`` adds them up; ``sources`` asks a running instance (``/metrics``,
``/readiness``) or Prometheus; ``counters`` parses what they answer; ``build`` makes the frozen
``model.Report``; ``scrub`` is a second guard against a sensitive value in clear;
``render_md``, ``render_html`` (with ``charts`` and ``proxy/templates/report.html``) and
``render_json`` write it. docs/report.md describes the output.
"""

from proxy.report.build import Options, build
from proxy.report.model import Report, ReportError

FORMATS = ("md", "html", "json")


def render(report: Report, form: str) -> str:
    """``form``: one of FORMATS."""
    if form == "json":
        from proxy.report.render_json import render as as_json

        return as_json(report)
    if form == "html":
        from proxy.report.render_html import render as as_html

        return as_html(report)
    from proxy.report.render_md import render as as_md

    return as_md(report)


__all__ = ["FORMATS", "Options", "Report", "ReportError", "build", "render"]
