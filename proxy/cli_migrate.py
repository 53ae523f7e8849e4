"""The migration commands: ``shadowproxy backfill`` and ``shadowproxy verify``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import orjson

from proxy.errors import ConfigError
from proxy.migrate.job import Segment, open_job, parse_segment
from proxy.settings import Settings, load_settings

EXIT_DIFFERENT = 3
"""backfill: finished, some records rejected; verify: the stores differ."""

DEFAULT_CHECKPOINTS = ".shadowproxy/checkpoints"


def _segment(text: str) -> Segment:
    try:
        return parse_segment(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected records per second above 0, got {text!r}")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {text!r}")
    return int(text)


def add_parsers(sub: Any, *, epilog: Callable[[list[str], str], str], config_help: str) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", required=True, metavar="FILE", help=config_help)
    common.add_argument("--resource", required=True, metavar="NAME", help="the resource (required)")
    common.add_argument(
        "--from",
        dest="source",
        metavar="STORE",
        help="the store read first (default: the one reads are served from now, read_from)",
    )
    common.add_argument(
        "--to", dest="target", metavar="STORE", help="the other store (default: the other one)"
    )
    common.add_argument(
        "--segment",
        type=_segment,
        default=Segment(),
        metavar="I/N",
        help="only segment I of N (0 <= I < N): N processes with the same N cover the table "
        "once; in a Kubernetes Indexed Job, $(JOB_COMPLETION_INDEX)/N (default: 0/1)",
    )
    common.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve the job's counters on http://127.0.0.1:PORT/metrics while it runs "
        "(default: not served)",
    )

    back = sub.add_parser(
        "backfill",
        parents=[common],
        help="copy every record of a resource to the other store",
        description=(
            "Store mode: copy every record of a resource from the primary (the live\n"
            "read_from) to the other store, in pages, the way a dual write is copied: a\n"
            "batch write, then the same keys read back from the source, and a key that moved\n"
            "meanwhile copied again. So a running proxy's newer writes are never replaced\n"
            "and a key it deleted is not brought back. Records that break the schema go to\n"
            "the rejects file (JSONL), counted. A checkpoint per segment is saved after\n"
            "every page; --resume goes on after a crash, kill or Ctrl-C."
        ),
        epilog=epilog(
            [
                "shadowproxy backfill -c config/users.yaml --resource users",
                "shadowproxy backfill -c config/users.yaml --resource users --rate 500 --resume",
                "shadowproxy backfill -c config/users.yaml --resource users --segment 2/8 "
                "--checkpoints redis://127.0.0.1:6379/0",
            ],
            (
                f"0 every record copied; {EXIT_DIFFERENT} finished, some records rejected (see\n"
                "the rejects file); 1 a store error or a page that could not be copied (run\n"
                "again with --resume); 2 usage or config error; 130 Ctrl-C (--resume goes on)."
            ),
        ),
    )
    back.add_argument(
        "--rate",
        type=_rate,
        metavar="N",
        help="at most N records per second (default: as fast as the stores answer); halved "
        "while the target throttles",
    )
    back.add_argument(
        "--concurrency",
        type=_positive_int,
        default=4,
        metavar="N",
        help="pages being written at once; a resumed run copies at most N pages again "
        "(default: %(default)s)",
    )
    back.add_argument(
        "--checkpoints",
        default=DEFAULT_CHECKPOINTS,
        metavar="DIR|URL",
        help="where checkpoints are kept: a directory, or redis://HOST:PORT/DB for pods "
        "without a shared volume (default: %(default)s)",
    )
    again = back.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="go on from this segment's checkpoint (default: refuse to run over one)",
    )
    again.add_argument(
        "--restart",
        action="store_true",
        help="ignore this segment's checkpoint and start over (default: off)",
    )
    back.add_argument(
        "--rejects",
        type=Path,
        metavar="FILE",
        help="JSONL file of records that break the schema (default: "
        "backfill-rejects-RESOURCE-I-of-N.jsonl beside the checkpoints, or in the current "
        "directory when checkpoints are in Redis)",
    )

    ver = sub.add_parser(
        "verify",
        parents=[common],
        help="compare two stores of a resource record by record",
        description=(
            "Store mode: compare every record of a resource in two stores through the\n"
            "canonical codecs and the resource's comparison rules, a page at a time (memory\n"
            "stays flat): counts, keys in one store only, records that differ with their\n"
            "fields (sensitive values as keyed hashes). A difference is re-read before it is\n"
            "reported, so a write on its way is not one. A full run's result is stored for\n"
            "the stop-old-writes readiness verdict."
        ),
        epilog=epilog(
            [
                "shadowproxy verify -c config/users.yaml --resource users",
                "shadowproxy verify -c config/users.yaml --resource users --output diffs.jsonl",
                "shadowproxy verify -c config/users.yaml --resource users --keys diffs.jsonl "
                "--repair",
            ],
            (
                f"0 the stores are equal; {EXIT_DIFFERENT} they differ (or writes were in\n"
                "flight at every re-check); 1 a store error; 2 usage or config error."
            ),
        ),
    )
    ver.add_argument(
        "--output",
        type=Path,
        metavar="FILE",
        help="write each difference as a JSON line: key, kind (missing, extra, differs), "
        "fields (default: none written)",
    )
    ver.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="the summary on stdout: text, or one JSON object (default: %(default)s)",
    )
    ver.add_argument(
        "--keys",
        type=Path,
        metavar="FILE",
        help="only these keys: one per line, or the JSON lines of an --output file "
        "(default: the whole segment)",
    )
    ver.add_argument(
        "--repair",
        action="store_true",
        help="repair each difference from the primary through the repairer, then verify "
        "those keys again (default: off)",
    )
    ver.add_argument(
        "--recheck-delay",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="wait before re-reading a difference (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if args.command == "backfill":
        return asyncio.run(_backfill(settings, args))
    return asyncio.run(_verify(settings, args))


def _redactor(settings: Settings) -> Any:
    from proxy.shared import redactor

    return redactor(settings, os.environ)


def _metrics(args: argparse.Namespace) -> Any:
    from proxy.migrate.progress import JobMetrics

    metrics = JobMetrics()
    if args.metrics_port:
        metrics.serve(args.metrics_port)
    return metrics


async def _backfill(settings: Settings, args: argparse.Namespace) -> int:
    from proxy.migrate.backfill import Backfill, open_rejects
    from proxy.migrate.checkpoint import open_checkpoints
    from proxy.migrate.progress import progress

    segment: Segment = args.segment
    async with AsyncExitStack() as stack:
        job = await stack.enter_async_context(
            open_job(settings, args.resource, source=args.source, target=args.target)
        )
        if job.source != job.flags.read_from:
            raise ConfigError(
                f"--from {job.source}: backfill copies from the primary, and reads of "
                f"{job.name!r} are served from {job.flags.read_from!r} now"
            )
        checkpoints = open_checkpoints(args.checkpoints)
        stack.push_async_callback(checkpoints.close)
        rejects_path = args.rejects or _default_rejects(args.checkpoints, job.name, segment)
        rejects = open_rejects(rejects_path, append=args.resume)
        stack.callback(rejects.close)
        shown = stack.enter_context(progress("backfill", job.name, metrics=_metrics(args)))
        repair = settings.repair
        backfill = Backfill(
            job,
            segment=segment,
            checkpoints=checkpoints,
            rejects=rejects,
            redactor=_redactor(settings),
            progress=shown,
            rate=args.rate,
            concurrency=args.concurrency,
            late_write_seconds=30.0 if repair is None else repair.late_write_seconds,
        )
        try:
            result = await backfill.run(resume=args.resume, restart=args.restart)
        except asyncio.CancelledError:
            print("backfill interrupted: --resume goes on from the checkpoint", file=sys.stderr)
            raise KeyboardInterrupt from None
    print(result.summary(job.name))
    if result.rejected:
        print(f"{result.rejected} records rejected: see {rejects_path}")
        return EXIT_DIFFERENT
    return 0


def _default_rejects(checkpoints: str, resource: str, segment: Segment) -> Path:
    name = f"backfill-rejects-{resource}-{segment.index}-of-{segment.total}.jsonl"
    if checkpoints.startswith(("redis://", "rediss://", "unix://")):
        return Path(name)
    return Path(checkpoints) / name


async def _verify(settings: Settings, args: argparse.Namespace) -> int:
    from proxy.migrate.progress import progress
    from proxy.migrate.verify import Verify

    keys = _read_keys(args.keys) if args.keys else None
    if args.recheck_delay < 0:
        raise ConfigError(f"--recheck-delay {args.recheck_delay:g}: must be 0 or more")
    async with AsyncExitStack() as stack:
        job = await stack.enter_async_context(
            open_job(settings, args.resource, source=args.source, target=args.target)
        )
        output = None
        if args.output:
            output = stack.enter_context(args.output.open("wb"))
        shown = stack.enter_context(progress("verify", job.name, metrics=_metrics(args)))
        verify = Verify(
            job,
            segment=args.segment,
            redactor=_redactor(settings),
            progress=shown,
            output=output,
            recheck_delay=args.recheck_delay,
        )
        outcome = await (verify.run() if keys is None else verify.run_keys(keys))
        repaired_lines: list[str] = []
        if args.repair and verify.differences:
            repaired_lines = await _repair(settings, job, verify.differences)
            again = Verify(
                job, segment=args.segment, redactor=_redactor(settings), progress=shown,
                recheck_delay=0.0,
            )  # fmt: skip
            outcome = await again.run_keys(verify.differences)
        if keys is None and not args.repair:
            await _save(settings, outcome)
    if args.format == "json":
        print(orjson.dumps(outcome.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        for line in [*outcome.summary(), *repaired_lines]:
            print(line)
    return 0 if outcome.clean else EXIT_DIFFERENT


def _read_keys(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"--keys {str(path)!r}: {e.strerror or e}") from e
    keys = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                value = orjson.loads(line).get("key")
            except (orjson.JSONDecodeError, AttributeError):
                value = None
            if not isinstance(value, str | int):
                raise ConfigError(f'--keys {str(path)!r} line {number}: no "key" in it')
            line = str(value)
        keys.append(line)
    return list(dict.fromkeys(keys))


async def _repair(settings: Settings, job: Any, keys: list[str]) -> list[str]:
    """Each key through the repair path: logged, then repaired by the repairer (from the
    primary the live flags name), as reconcile repairs. The log is this run's own, so other
    resources' entries in a shared log are left to their repairers."""
    from prometheus_client import CollectorRegistry

    from proxy.repair.memory_log import MemoryRepairLog
    from proxy.repair.repairer import Repairer, RepairMetrics
    from proxy.resources.wiring import repair_targets

    log = MemoryRepairLog(retry_after_seconds=0.5)
    for key in keys:
        await log.append(job.name, key, "verify: the stores differ", op="verify")
    repairer = Repairer(
        log,
        repair_targets([job.parts], lambda name: job.flags),
        RepairMetrics.create(CollectorRegistry()),
    )
    repaired, failed = await repairer.drain()
    return [f"repaired {repaired} keys ({failed} attempts failed)"]


async def _save(settings: Settings, outcome: Any) -> None:
    """A full run's result, for the stop-old-writes verdict."""
    from proxy.readiness.verify_results import VerifyResult, open_verify_results

    results = open_verify_results(settings.readiness)
    try:
        await results.save(
            VerifyResult(
                resource=outcome.resource,
                source=outcome.source,
                target=outcome.target,
                segment=outcome.segment.index,
                total_segments=outcome.segment.total,
                started_at=outcome.started_at,
                finished_at=outcome.finished_at,
                source_records=outcome.source_records,
                target_records=outcome.target_records,
                missing=outcome.missing,
                extra=outcome.extra,
                differing=outcome.differing + outcome.in_flight,
            )
        )
    except Exception as e:  # the comparison stands; only its record for the gate failed
        logging.getLogger("shadowproxy.jobs").error(
            "verify result not stored for readiness: %s: %s", type(e).__name__, e
        )
    finally:
        await results.close()
