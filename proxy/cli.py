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
