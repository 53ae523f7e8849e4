"""The replay commands: ``shadowproxy replay`` and ``shadowproxy export-corpus``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proxy.errors import ConfigError
from proxy.settings import Settings, load_settings

EXIT_REMAINING = 3
"""replay: some requests still differ or now fail."""
EXIT_BAD_INPUT = 2
DEFAULT_CORPUS = "shadowproxy-corpus.jsonl"


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def _duration(text: str) -> float:
    from proxy.replay.plan import parse_duration

    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _common(parser: argparse.ArgumentParser, config_help: str) -> None:
    parser.add_argument("-c", "--config", required=True, metavar="FILE", help=config_help)
    parser.add_argument(
        "--route",
        "--resource",
        dest="target",
        metavar="NAME",
        help="only records of this route or resource (default: every one)",
    )
    parser.add_argument(
        "--since",
        type=_duration,
        metavar="DURATION",
        help="only records of the last DURATION, e.g. 30m, 24h, 7d (default: all kept)",
    )
    parser.add_argument(
        "--limit",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="at most the newest N records (default: %(default)s)",
    )
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=4,
        metavar="N",
        help="requests in flight at once (default: %(default)s)",
    )


RECORDS_HELP = (
    "read records from FILE instead of the sink: JSON lines of mismatch records, a JSON list "
    "of them, or the JSON of GET /mismatches (default: the sink the config names)"
)

REPORT_HELP = (
    "read the examples of a JSON report ('shadowproxy report --format json') instead of the "
    "sink (default: the sink the config names)"
)


def add_parsers(sub: Any, *, epilog: Callable[[list[str], str], str], config_help: str) -> None:
    replay = sub.add_parser(
        "replay",
        help="send stored mismatching requests again: fixed, still different, failing?",
        description=(
            "Send stored mismatching requests again, now, to both sides the config names:\n"
            "HTTP mode, the route's primary and shadow backends; store mode, the resource's\n"
            "two stores (the read done again through their codecs, compared under the\n"
            "resource's rules, re-read before a difference stands). Records come from the\n"
            "mismatch sink, --records FILE or a JSON report's examples (--report FILE);\n"
            "identical requests are sent once. Only GET, HEAD and OPTIONS are sent unless\n"
            "--allow-unsafe. A request whose redacted or unrecorded parts matter (a\n"
            "sensitive query value, a body) is not replayable, with the reason. Prints each\n"
            "request's verdict (fixed, still different, failing, not replayable) and the\n"
            "totals. With --corpus FILE (from export-corpus) each configured side's answer\n"
            "is compared with the recorded primary answer instead. See docs/replay.md."
        ),
        epilog=epilog(
            [
                "shadowproxy replay -c config/http-dropin.yaml",
                "shadowproxy replay -c config/http-dropin.yaml --route users-get --since 24h",
                "shadowproxy replay -c config/users.yaml --records mismatches.jsonl --format json",
                "shadowproxy replay -c config/users.yaml --report report.json --resource users",
                "SHADOWPROXY_REDACTION_KEY=... shadowproxy replay -c config/http-dropin.yaml "
                "--corpus corpus.jsonl",
            ],
            (
                f"0 every replayed request is fixed (none remains); {EXIT_REMAINING} some still\n"
                "differ or now fail (with --strict: or are not replayable); 1 a store error\n"
                "(e.g. a store unreachable); 2 usage or config error, bad input (no sink file,\n"
                "an unknown route, a corpus under another redaction key) or malformed lines\n"
                "(counted and skipped, the rest replayed)."
            ),
        ),
    )
    _common(replay, config_help)
    source = replay.add_mutually_exclusive_group()
    source.add_argument("--records", type=Path, metavar="FILE", help=RECORDS_HELP)
    source.add_argument("--report", type=Path, metavar="FILE", help=REPORT_HELP)
    source.add_argument(
        "--corpus",
        type=Path,
        metavar="FILE",
        help="replay a corpus from export-corpus: each configured side's answer against the "
        "recorded primary answer (default: records, both sides against each other)",
    )
    replay.add_argument(
        "--allow-unsafe",
        action="store_true",
        help="also send methods that are not idempotent (DELETE; a POST, PUT or PATCH stays "
        "not replayable: its body is not recorded) (default: GET, HEAD, OPTIONS only)",
    )
    replay.add_argument(
        "--strict",
        action="store_true",
        help=f"exit {EXIT_REMAINING} when a request is not replayable, too (default: off)",
    )
    replay.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="a line per request and the totals, or one JSON object (default: %(default)s)",
    )

    export = sub.add_parser(
        "export-corpus",
        help="keep stored mismatching requests and the primary's answers as a corpus",
        description=(
            "Write stored mismatching requests as a regression corpus: JSON lines, a header\n"
            "then one case per distinct request with the primary's answer, read now and\n"
            "redacted as mismatch records are (sensitive values as keyed hashes, a body that\n"
            "is not JSON as its size, kind and digest). Only what replay could send\n"
            "faithfully, and only reads, are kept; the rest are listed with the reason.\n"
            "Needs the redaction key ($SHADOWPROXY_REDACTION_KEY, or redaction.key_env):\n"
            "'replay --corpus' compares under the same key. See docs/replay.md."
        ),
        epilog=epilog(
            [
                "export SHADOWPROXY_REDACTION_KEY=...",
                "shadowproxy export-corpus -c config/http-dropin.yaml -o corpus.jsonl",
                "shadowproxy export-corpus -c config/users.yaml --resource users "
                "--records mismatches.jsonl",
            ],
            (
                "0 written (requests that could not be kept are listed); 1 a store error;\n"
                "2 usage or config error, bad input, no redaction key, or malformed lines\n"
                "(counted and skipped, the corpus written without them)."
            ),
        ),
    )
    _common(export, config_help)
    source = export.add_mutually_exclusive_group()
    source.add_argument("--records", type=Path, metavar="FILE", help=RECORDS_HELP)
    source.add_argument("--report", type=Path, metavar="FILE", help=REPORT_HELP)
    export.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path(DEFAULT_CORPUS),
        metavar="FILE",
        help="the corpus file, replaced whole (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if args.command == "replay":
        return asyncio.run(_replay(settings, args))
    return asyncio.run(_export(settings, args))


def _redactor(settings: Settings, *, required: bool) -> Any:
    from proxy.shared import redactor

    if required and not os.environ.get(settings.redaction.key_env):
        raise ConfigError(
            f"set {settings.redaction.key_env} (redaction.key_env) to the redaction key: a "
            "corpus's hashes compare only under the key it was exported with"
        )
    return redactor(settings, os.environ)


def _load(settings: Settings, args: argparse.Namespace, redactor: Any) -> tuple[list[Any], Any]:
    from proxy.replay import corpus, plan, records

    if getattr(args, "corpus", None) is not None:
        if args.since is not None:
            raise ConfigError("--since selects records; a corpus is replayed whole")
        plan.keep_filter(settings, args.target, None)  # an unknown --route is an error
        cases, loaded = corpus.read_corpus(args.corpus, redactor, args.target)
        _known(settings, cases, args.corpus)
        return cases[: args.limit], loaded
    keep = plan.keep_filter(settings, args.target, args.since)
    if args.records is not None:
        loaded = records.from_file(args.records, keep=keep, limit=args.limit)
    elif args.report is not None:
        loaded = records.from_report(args.report, keep=keep, limit=args.limit)
    else:
        loaded = records.from_sink(settings, keep=keep, limit=args.limit)
    allow = getattr(args, "allow_unsafe", False)
    return plan.plan(loaded.records, settings, redactor, allow_unsafe=allow), loaded


def _known(settings: Settings, cases: list[Any], path: Path) -> None:
    """A corpus fits the config it runs with: every route and resource it names exists."""
    routes = {r.name for r in settings.routes}
    for case in cases:
        request = case.request
        known = routes if request.kind == "http" else settings.resources
        if request.target not in known:
            what = "route" if request.kind == "http" else "resource"
            raise ConfigError(
                f"--corpus {str(path)!r}: case {request.ident} names {what} "
                f"{request.target!r}, which is not in the config"
            )


def _malformed(loaded: Any) -> None:
    if not loaded.malformed:
        return
    print(
        f"shadowproxy: {loaded.malformed} malformed line{'s' if loaded.malformed != 1 else ''} "
        f"skipped in {loaded.source}",
        file=sys.stderr,
    )
    for example in loaded.examples:
        print(f"  {example}", file=sys.stderr)


async def _replay(settings: Settings, args: argparse.Namespace) -> int:
    from proxy.replay import render, runner
    from proxy.replay.model import Totals
    from proxy.store import exactjson

    redactor = _redactor(settings, required=args.corpus is not None)
    cases, loaded = _load(settings, args, redactor)
    results = await runner.replay(
        settings, cases, redactor, os.environ, concurrency=args.concurrency
    )
    totals = Totals.of(results, loaded.malformed)
    path_of = render.path_shower(settings, redactor)
    if args.format == "json":
        shown = render.as_json(results, totals, loaded, path_of, strict=args.strict)
        print(exactjson.dumps(shown, default=str).decode())
    else:
        print(render.text(results, totals, loaded, path_of))
    _malformed(loaded)
    if loaded.malformed:
        return EXIT_BAD_INPUT
    return EXIT_REMAINING if totals.remaining(strict=args.strict) else 0


async def _export(settings: Settings, args: argparse.Namespace) -> int:
    from proxy.replay import corpus, render, runner

    redactor = _redactor(settings, required=True)
    cases, loaded = _load(settings, args, redactor)
    exported = await runner.export(
        settings, cases, redactor, os.environ, concurrency=args.concurrency
    )
    written = corpus.write_corpus(args.output, exported.lines, redactor)
    path_of = render.path_shower(settings, redactor)
    for case, why in exported.skipped:
        request = case.request
        print(f"not kept: {request.target}  {request.method} {path_of(request)}: {why}")
    print(
        f"export-corpus: {written} requests written to {args.output} "
        f"({len(exported.skipped)} not kept), from {loaded.source}"
    )
    _malformed(loaded)
    return EXIT_BAD_INPUT if loaded.malformed else 0
