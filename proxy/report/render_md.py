"""The report as GitHub-flavoured Markdown that pastes cleanly into an issue or a PR: tables,
values in code spans (never interpreted, ``|`` escaped), a text sparkline for the timeline."""

from __future__ import annotations

import re

from proxy.report import fmt
from proxy.report.build import OUTCOMES
from proxy.report.model import (
    CriterionRow,
    Example,
    Report,
    Source,
    TargetReport,
    VerdictView,
)
from proxy.report.window import iso

SPARKS = "▁▂▃▄▅▆▇█"
_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")
TITLES = {"flip_reads": "flip reads", "stop_old_writes": "stop old-store writes"}


def text(value: object) -> str:
    """Plain text in a paragraph or cell: Markdown's punctuation escaped, one line."""
    return _SPECIAL.sub(r"\\\1", " ".join(str(value).split()))


def code(value: object) -> str:
    """A code span around ``value`` (longer fences than any backtick run inside it)."""
    body = " ".join(str(value).split()).replace("|", "\\|")
    if not body:
        return ""
    ticks = "`" * (max((len(m) for m in re.findall(r"`+", body)), default=0) + 1)
    pad = " " if body.startswith("`") or body.endswith("`") else ""
    return f"{ticks}{pad}{body}{pad}{ticks}"


def table(head: list[str], rows: list[list[str]], right: int = 0) -> list[str]:
    """``right``: how many trailing columns are numbers (aligned right)."""
    align = ["---"] * (len(head) - right) + ["---:"] * right
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def sparkline(counts: list[int]) -> str:
    top = max(counts, default=0)
    if top == 0:
        return SPARKS[0] * len(counts)
    return "".join(SPARKS[0] if n == 0 else SPARKS[max(1, round(n / top * 7))] for n in counts)


def render(report: Report) -> str:
    lines = [
        "# shadowproxy report",
        "",
        f"Config {code(report.config)}, window {text(report.window.since)} "
        f"({iso(report.window.start)} to {iso(report.window.end)}), generated "
        f"{iso(report.generated_at)} by shadowproxy {text(report.version)}.",
        "",
        *table(
            ["source", "where", "state"],
            [
                _source_row("mismatch records", report.sink, report),
                _source_row("counters", report.counters, report),
                _source_row("readiness", report.readiness, report),
            ],
        ),
    ]
    for warning in report.warnings:
        lines += ["", f"> **Warning:** {text(warning)}"]
    if not report.targets:
        lines += ["", "No resource or route to report on."]
    for target in report.targets:
        lines += ["", *_target(target)]
    return "\n".join(lines) + "\n"


def _source_row(name: str, source: Source, report: Report) -> list[str]:
    if not source.available:
        state = f"**unavailable**: {text(source.error)}"
    elif source is report.sink:
        state = f"{sum(t.records for t in report.targets):,} records in the window"
    else:
        state = text(source.span or "answered")
    return [text(name), f"{text(source.kind)} {code(source.location)}", state]


def _target(t: TargetReport) -> list[str]:
    lines = [f"## {text(t.name)} ({t.kind})", "", f"**Mismatch rate:** {text(fmt.rate(t.rate))}"]
    lines += ["", f"Mismatch records in the window: {t.records:,}."]
    if t.noise_records or t.noise is not None:
        lines += ["", "### Learned noise", "", *_noise(t)]
    lines += ["", "### Outcomes", ""]
    if t.outcomes is None:
        lines.append("No counters: the outcomes are not known.")
    else:
        rows = [[code(op), *(fmt.count(c.get(o, 0)) for o in OUTCOMES)]
                for op, c in sorted(t.operations.items())]  # fmt: skip
        rows.append(["**all**", *(f"**{fmt.count(t.outcomes[o])}**" for o in OUTCOMES)])
        lines += table(["operation", *OUTCOMES], rows, right=len(OUTCOMES))
    lines += ["", "### Readiness", "", *_readiness(t.verdicts)]
    lines += ["", "### Top differing fields", ""]
    if t.fields:
        lines += table(
            ["field", "records", "counter"],
            [[code(f.field), fmt.count(f.records), fmt.count(f.counter)] for f in t.fields],
            right=2,
        )
    else:
        lines.append("No differing field.")
    lines += ["", "### Latency", ""]
    if t.latency:
        rows = [
            [text(lat.side), text(", ".join(lat.backends)), fmt.count(lat.samples),
             fmt.ms(lat.p50_seconds), fmt.ms(lat.p99_seconds)]
            for lat in t.latency
        ]  # fmt: skip
        lines += table(["side", "backends", "samples", "p50", "p99"], rows, right=3)
    else:
        lines.append("No latency samples.")
    counts = [b.mismatches for b in t.timeline]
    lines += [
        "",
        "### Mismatch records over time",
        "",
        f"{code(sparkline(counts))} per {fmt.duration(t.bucket_seconds)} from "
        f"{iso(t.timeline[0].start)} (peak {max(counts, default=0):,})"
        if t.timeline
        else "No time buckets.",
    ]
    lines += ["", "### Examples"]
    if not t.examples:
        lines += ["", "No mismatch record in the window."]
    for e in t.examples:
        lines += ["", *_example(e)]
    return lines


def _noise(t: TargetReport) -> list[str]:
    lines = [f"Records that differ only in learned noise (not mismatches): {t.noise_records:,}."]
    learned = t.noise
    if learned is None:
        return [*lines, "", "What was learned is not known (the instance could not be asked)."]
    state = "still learning (below min_samples)" if learned.learning else "in force"
    lines += [
        "",
        f"Backend {code(learned.backend)}, {state}: {learned.noise_comparisons:,} noise and "
        f"{learned.shadow_comparisons:,} shadow comparisons in the instance's process, "
        f"{learned.fields_dropped:,} field differences past the field cap.",
    ]
    if learned.fields:
        rows = [
            [code(f.field), "**noise**" if f.noisy else "no", fmt.pct(f.noise_rate),
             fmt.pct(f.shadow_rate)]
            for f in learned.fields
        ]  # fmt: skip
        lines += ["", *table(["field", "noisy", "noise rate", "shadow rate"], rows, right=2)]
    return lines


def _readiness(verdicts: tuple[VerdictView, ...] | None) -> list[str]:
    if verdicts is None:
        return ["Readiness is not known: the instance could not be asked (see the sources)."]
    if not verdicts:
        return ["The instance has no readiness verdict for it (not shadowed)."]
    lines: list[str] = []
    for v in verdicts:
        state = "READY" if v.ready else "NOT READY"
        title = TITLES.get(v.decision, v.decision)
        lines += [
            f"**{text(title)}: {state}** (window {fmt.measured(v.window_seconds)} s, computed "
            f"{text(v.computed_at)})",
            "",
            *table(
                ["criterion", "measured", "threshold", "result", "detail"],
                [_criterion(c) for c in v.criteria],
            ),
            "",
        ]
    return lines[:-1]


def _criterion(c: CriterionRow) -> list[str]:
    result = "ok" if c.status == "ok" else f"**{text(c.status)}**"
    threshold = code(f"{c.operator} {fmt.measured(c.threshold)}")
    return [code(c.name), code(fmt.measured(c.measured)), threshold, result, text(c.detail)]


def _example(e: Example) -> list[str]:
    primary, shadow = e.stores
    head = (
        f"**{text(e.time)}** {code(f'{e.method} {e.path}')}, operation {code(e.operation)}, "
        f"request {code(e.request_id)}, status {fmt.status(e.primary_status)} / "
        f"{fmt.status(e.shadow_status)}, "
        f"{_ms(e.primary_ms)} / {_ms(e.shadow_ms)}" + (", **summarised**" if e.summarised else "")
    )
    lines = [head]
    if e.detail:
        lines += ["", text(e.detail)]
    left = "primary" + (f" ({primary})" if primary else "")
    right = "shadow" + (f" ({shadow})" if shadow else "")
    lines += [
        "",
        *table(
            ["field", "kind", text(left), text(right)],
            [
                [code(c.path), text(c.kind), code(fmt.value(c.primary)), code(fmt.value(c.shadow))]
                for c in e.changes
            ],
        ),
    ]
    return lines


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g} ms"
