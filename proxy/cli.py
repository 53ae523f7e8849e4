"""``shadowproxy`` (also ``python -m proxy``): serve, check-config, demo."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence

from proxy.errors import ConfigError
from proxy.logs import configure_logging
from proxy.settings import load_settings
from proxy.store.base import StoreError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shadowproxy",
        description="Serve from the primary, shadow to the other side, compare, measure.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the proxy")
    serve.add_argument("-c", "--config", required=True, help="YAML config file")
    serve.add_argument("--workers", type=int, help="processes sharing the port (default: config)")

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("-c", "--config", required=True)

    init = sub.add_parser("init-stores", help="create missing tables and indexes (idempotent)")
    init.add_argument("-c", "--config", required=True)

    rec = sub.add_parser("reconcile", help="repair every key in the repair log now")
    rec.add_argument("-c", "--config", required=True)

    flags = sub.add_parser("flags", help="show, change and audit the live flags")
    flags_sub = flags.add_subparsers(dest="flags_command", required=True)
    for name, text in (("show", "every flag"), ("set", "change one flag"), ("history", "audit")):
        p = flags_sub.add_parser(name, help=text)
        p.add_argument("-c", "--config", required=True)
        p.add_argument("--admin-url", help="a running instance's admin URL (default: config)")
        if name == "set":
            p.add_argument("target", help="resource or route name, e.g. users")
            p.add_argument("assignment", help="FLAG=VALUE, e.g. read_from=dynamodb")
            p.add_argument("--reason", required=True, help="why: the audit keeps it")
            p.add_argument("--force", action="store_true", help="flip despite failed readiness")
        if name == "history":
            p.add_argument("--target")
            p.add_argument("--limit", type=int, default=50)

    ready = sub.add_parser("readiness", help="is it safe to flip reads? exit 0 only when ready")
    ready.add_argument("-c", "--config", required=True)
    ready.add_argument("--resource", "--route", dest="target", help="one resource or route")
    ready.add_argument("--admin-url")
    ready.add_argument("--json", action="store_true")

    demo = sub.add_parser("demo", help="run a self-contained demo on embedded services")
    demo.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    demo.add_argument(
        "--story",
        choices=("store", "http"),
        default="store",
        help="store: PostgreSQL -> DynamoDB (default); http: two HTTP services",
    )
    demo.add_argument("--requests", type=int, default=400, help="http story: GETs to send")
    demo.add_argument("--users", type=int, default=3000, help="store story: users to load")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "check-config":
            settings = load_settings(args.config)
            routes, resources = len(settings.routes), len(settings.resources)
            print(
                f"{args.config}: OK ({len(settings.backends)} backends, {routes} routes, "
                f"{resources} resources)"
            )
            return 0
        if args.command in ("init-stores", "reconcile"):
            from proxy.resources import admin_ops

            command = (
                admin_ops.init_stores if args.command == "init-stores" else admin_ops.reconcile
            )
            for line in asyncio.run(command(load_settings(args.config))):
                print(line)
            return 0
        if args.command in ("flags", "readiness"):
            return _admin_command(args)
        if args.command == "serve":
            return _serve(args.config, args.workers)
        if args.command == "demo":
            from proxy.demo import run_demo

            return asyncio.run(
                run_demo(
                    story=args.story,
                    duration=args.duration,
                    requests=args.requests,
                    users=args.users,
                )
            )
    except ConfigError as e:
        print(f"shadowproxy: config error: {e}", file=sys.stderr)
        return 2
    except StoreError as e:
        print(f"shadowproxy: store error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2  # pragma: no cover - argparse rejects unknown commands


def _admin_command(args: argparse.Namespace) -> int:
    from proxy import cli_admin

    settings = load_settings(args.config)
    try:
        client = cli_admin.AdminClient.from_settings(settings, args.admin_url)
        if args.command == "readiness":
            ready, text = cli_admin.readiness(client, args.target, args.json)
            print(text)
            return 0 if ready else 1
        if args.flags_command == "show":
            print(cli_admin.flags_show(client))
        elif args.flags_command == "set":
            print(
                cli_admin.flags_set(client, args.target, args.assignment, args.reason, args.force)
            )
        else:
            print(cli_admin.flags_history(client, args.target, args.limit))
        return 0
    except cli_admin.AdminError as e:
        print(f"shadowproxy: {e}", file=sys.stderr)
        return 2


def _serve(config: str, workers: int | None) -> int:
    from proxy.serve import run_workers, serve

    settings = load_settings(config)
    count = workers if workers is not None else settings.workers
    if count < 1:
        raise ConfigError(f"--workers = {count}: must be at least 1")
    configure_logging(settings.logging.format, settings.logging.level)
    if count > 1:
        return run_workers(config, count)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(settings, reuse_port=_is_worker()))
    return 0


def _is_worker() -> bool:
    return os.environ.get("SHADOWPROXY_WORKER") == "1"


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - optional speed-up
        return None
    return uvloop.new_event_loop
