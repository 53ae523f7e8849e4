"""The report command: ``shadowproxy report`` (docs/report.md describes its output)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proxy.report.model import ReportError, TargetKind
from proxy.report.window import UNITS, parse_duration
from proxy.settings import load_settings

DEFAULT_SINCE = "24h"


def _since(text: str) -> str:
    try:
        parse_duration(text)
    except ReportError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix(f"--since {text!r}: ")) from e
    return text


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number of 0 or more, got {text!r}")
    return int(text)


def add_parsers(sub: Any, *, epilog: Callable[[list[str], str], str], config_help: str) -> None:
    rep = sub.add_parser(
        "report",
        help="a mismatch report per resource and route: Markdown, HTML or JSON",
        description=(
            "A report of what the shadow comparisons say, per resource and route: the\n"
            "comparisons and their outcomes, the mismatch rate with its 95% interval, the\n"
            "top differing fields, a few examples side by side (as redacted as the sink\n"
            "holds them), latency p50/p99 per side, and the readiness verdicts with every\n"
            "criterion. Mismatch records come from the sink in the config (the JSON-lines\n"
            "file with its backups, or the Redis stream); counters from the running\n"
            "instance's admin /metrics (totals since it started), or from Prometheus over\n"
            "the window with --prometheus; verdicts from its GET /readiness, with the admin\n"
            "token from the environment. A part that cannot be reached is reported as such.\n"
            "--format html writes one self-contained file (inline CSS and SVG charts);\n"
            "md pastes into an issue; json follows docs/report.schema.json."
        ),
        epilog=epilog(
            [
                "shadowproxy report -c config/users.yaml",
                "shadowproxy report -c config/users.yaml --resource users --since 7d "
                "--format html -o users-report.html",
                "shadowproxy report -c config/http-dropin.yaml --route users-get --format json "
                "--prometheus http://127.0.0.1:9091",
            ],
            (
                "0 report written (also when the instance or Prometheus could not be\n"
                "reached: the report says so); 2 usage or config error (also a --since\n"
                "that is not a duration, an unknown resource or route, a sink that cannot\n"
                "be read, an output file that cannot be written)."
            ),
        ),
    )
    rep.add_argument("-c", "--config", required=True, metavar="FILE", help=config_help)
    rep.add_argument(
        "--since",
        type=_since,
        default=DEFAULT_SINCE,
        metavar="DURATION",
        help=f"the window: a number and a unit ({', '.join(UNITS)}), e.g. 90m, 24h, 7d "
        "(default: %(default)s)",
    )
    only = rep.add_mutually_exclusive_group()
    only.add_argument(
        "--resource",
        metavar="NAME",
        help="only this store-mode resource (default: every resource and shadowed route)",
    )
    only.add_argument(
        "--route",
        metavar="NAME",
        help="only this HTTP route (default: every resource and shadowed route)",
    )
    rep.add_argument(
        "--format",
        choices=("md", "html", "json"),
        default="md",
        help="md (GitHub-flavoured Markdown), html (one self-contained file) or json "
        "(default: %(default)s)",
    )
    rep.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="write the report to FILE, replaced whole (default: standard output)",
    )
    rep.add_argument(
        "--admin-url",
        metavar="URL",
        help="admin API of the instance to ask, e.g. http://10.0.0.5:9090 (default: "
        "http://ADMIN_HOST:ADMIN_PORT from the config; 127.0.0.1 when the host is 0.0.0.0 "
        "or ::)",
    )
    rep.add_argument(
        "--prometheus",
        metavar="URL",
        help="take the counters from this Prometheus (increases over the window, summed "
        "over every instance it scrapes) instead of the instance's /metrics "
        "(default: the instance's /metrics)",
    )
    rep.add_argument(
        "--examples",
        type=_count,
        default=3,
        metavar="N",
        help="the most recent N mismatch records shown per target (default: %(default)s)",
    )
    rep.add_argument(
        "--top-fields",
        type=_count,
        default=10,
        metavar="N",
        help="the N fields that differ most often, per target (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    from proxy.report import Options, build, render

    settings = load_settings(args.config)
    only: tuple[TargetKind, str] | None = None
    if args.resource:
        only = ("resource", args.resource)
    elif args.route:
        only = ("route", args.route)
    options = Options(
        config=args.config,
        since=args.since,
        only=only,
        admin_url=args.admin_url,
        prometheus=args.prometheus,
        examples=args.examples,
        top_fields=args.top_fields,
    )
    try:
        report = build(settings, options)
        text = render(report, args.format)
        if args.output is None:
            sys.stdout.write(text)
        else:
            _write(args.output, text)
    except ReportError as e:
        print(f"shadowproxy: report: {e}", file=sys.stderr)
        return 2
    for warning in report.warnings:
        print(f"shadowproxy: report: warning: {warning}", file=sys.stderr)
    for source in (report.counters, report.readiness):
        if not source.available:
            print(f"shadowproxy: report: {source.error} (said in the report)", file=sys.stderr)
    return 0


def _write(path: Path, text: str) -> None:
    """Through a temporary file and a rename, so a reader never opens half a report."""
    temp = None
    try:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)  # as open() would have made it
        os.replace(temp, path)
    except OSError as e:
        if temp is not None:
            Path(temp).unlink(missing_ok=True)
        raise ReportError(f"cannot write {str(path)!r}: {e.strerror or e}") from e
