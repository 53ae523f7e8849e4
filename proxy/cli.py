"""``shadowproxy`` (also ``python -m proxy``): the command line; docs/cli.md describes it.

Over 400 lines on purpose: most of it is help text — every option explained and an
example per command, checked by tests/unit/proxy/test_cli_help.py; the dispatch is short.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from proxy import __version__
from proxy.errors import ConfigError
from proxy.logs import configure_logging
from proxy.settings import DynamoDBBackend, Settings, load_settings
from proxy.store.base import StoreError

# The exit statuses ``main`` returns; the top-level --help and docs/cli.md show this table.
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (0, "success; readiness: ready; serve and demo: stopped by SIGTERM or Ctrl-C, drained"),
    (1, "readiness: not ready; a store error; an unexpected error (with a traceback)"),
    (2, "usage error; config error; admin API error or refused change; demo extra missing"),
    (
        3,
        "backfill: finished with rejected records; verify: the stores differ; "
        "replay: requests still differ or now fail",
    ),
    (130, "interrupted by Ctrl-C where no graceful stop is in place (e.g. init-stores)"),
)
WORKERS_EXIT = (
    "serve --workers N (N > 1): the first non-zero status of a worker; a worker killed\n"
    "by signal S makes it 256-S (e.g. 247 for SIGKILL)."
)
DEMO_EXTRA = "pip install 'shadowproxy[demo]'"
# What only the demo imports, installed by the ``demo`` extra: moto's server (with werkzeug)
# is the embedded DynamoDB endpoint; pgserver the embedded PostgreSQL when none answers.
DEMO_MODULES = frozenset({"moto", "werkzeug", "pgserver"})

CONFIG_HELP = (
    "YAML config file; any value can be overridden from the environment with "
    "SHADOWPROXY__<KEY>__<KEY>=VALUE (required)"
)
ADMIN_CONFIG_HELP = (
    "the running instance's config file: its admin host and port, and admin.token_env, the "
    "environment variable holding the admin token (default SHADOWPROXY_ADMIN_TOKEN) (required)"
)
ADMIN_URL_HELP = (
    "admin API of the instance to ask, e.g. http://10.0.0.5:9090 (default: "
    "http://ADMIN_HOST:ADMIN_PORT from the config; 127.0.0.1 when the host is 0.0.0.0 or ::)"
)


class _Parser(argparse.ArgumentParser):
    """Every parser (subcommands inherit the class) keeps the line breaks of its description
    and examples."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)


def _epilog(examples: Sequence[str], exits: str) -> str:
    """A command's examples (one command line each), then what its exit statuses mean."""
    lines = "\n".join(f"  {example}" for example in examples)
    return f"examples:\n{lines}\n\nexit status: {exits}"


def _exit_code_table() -> str:
    rows = "\n".join(f"  {code:<4} {text}" for code, text in EXIT_CODES)
    return f"exit codes:\n{rows}\n{WORKERS_EXIT}"


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: ``shadowproxy COMMAND [options]``."""
    parser = _Parser(
        prog="shadowproxy",
        description=(
            "Serve from the primary, shadow to the other side, compare, measure, flip.\n\n"
            "shadowproxy (also: python -m proxy) runs the proxy and the operator commands\n"
            "around it: validate a config, create the stores, repair, change the live flags,\n"
            "ask whether it is safe to flip reads, and a self-contained demo."
        ),
        epilog=(
            "examples:\n"
            "  shadowproxy demo                                      # nothing else has to run\n"
            "  shadowproxy check-config -c config/http-dropin.yaml\n"
            "  shadowproxy serve -c config/users.yaml\n"
            "  shadowproxy readiness -c config/users.yaml --resource users\n\n"
            "'shadowproxy COMMAND --help' shows a command's options and examples.\n\n"
            + _exit_code_table()
        ),
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"shadowproxy {__version__}",
        help="print 'shadowproxy VERSION' and exit",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="what to do (see below)"
    )

    serve = sub.add_parser(
        "serve",
        help="run the proxy",
        description=(
            "Run the proxy: the proxy port (listen.*) and the admin port (admin.*: /healthz,\n"
            "/metrics, /mismatches, /flags, /readiness). SIGTERM or Ctrl-C stops accepting,\n"
            "lets in-flight requests finish, gives queued shadow work shadow.drain_seconds,\n"
            "flushes the mismatch sink and exits 0. With more than one worker, that many\n"
            "processes share the ports (SO_REUSEPORT) and the parent forwards SIGTERM and\n"
            "SIGINT to every worker."
        ),
        epilog=_epilog(
            [
                "shadowproxy serve -c config/http-dropin.yaml             # workers from the "
                "config",
                "shadowproxy serve -c config/http-dropin.yaml --workers 4",
                "shadowproxy serve -c config/users.yaml                   # store mode",
                "SHADOWPROXY__LISTEN__PORT=8081 shadowproxy serve -c config/users.yaml",
            ],
            (
                "0 after a graceful stop; 2 on a config error (also --workers < 1);\n"
                "1 when it cannot start (e.g. the port is taken; with a traceback); 130 on Ctrl-C\n"
                "during start-up or during the drain; SIGTERM during start-up, or a second one\n"
                "during the drain, ends the process by the signal."
            )
            + "\n"
            + WORKERS_EXIT,
        ),
    )
    serve.add_argument("-c", "--config", required=True, metavar="FILE", help=CONFIG_HELP)
    serve.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes sharing the proxy and admin ports, at least 1 "
        "(default: 'workers' from the config, which defaults to 1)",
    )

    check = sub.add_parser(
        "check-config",
        help="validate a config file and exit",
        description=(
            "Load and validate a config file, environment overrides applied, without opening\n"
            "a port or a connection; print 'FILE: OK (N backends, N routes, N resources)',\n"
            "then the endpoint and region each DynamoDB backend resolves to (as serve will).\n"
            "A bad config names the key path and the bad value on stderr."
        ),
        epilog=_epilog(
            [
                "shadowproxy check-config -c config/http-dropin.yaml",
                "shadowproxy check-config -c config/users.yaml",
                "SHADOWPROXY__ROUTES__0__SAMPLE=0.25 shadowproxy check-config -c "
                "config/http-dropin.yaml",
            ],
            "0 valid; 2 invalid or unreadable.",
        ),
    )
    check.add_argument("-c", "--config", required=True, metavar="FILE", help=CONFIG_HELP)

    init = sub.add_parser(
        "init-stores",
        help="create missing tables and indexes (idempotent)",
        description=(
            "Store mode: create what is missing for every resource's stores (PostgreSQL\n"
            "tables and indexes, DynamoDB tables and GSIs) and wait until they are usable.\n"
            "Idempotent: safe to run before every deploy. Prints one line per store."
        ),
        epilog=_epilog(
            [
                "shadowproxy init-stores -c config/users.yaml",
                # null: AWS itself, in the region the config or the environment names
                "SHADOWPROXY__BACKENDS__DYNAMO__ENDPOINT_URL=null "
                "shadowproxy init-stores -c config/users.yaml",
            ],
            ("0 every store ready; 1 a store error (e.g. unreachable);\n2 config error."),
        ),
    )
    init.add_argument("-c", "--config", required=True, metavar="FILE", help=CONFIG_HELP)

    rec = sub.add_parser(
        "reconcile",
        help="repair every key in the repair log now",
        description=(
            "Store mode: drain the repair log now. For every key whose second write failed,\n"
            "copy the current primary's state of it (the live flags decide which store that\n"
            "is) to the other store, or delete it there. Idempotent; stuck entries are\n"
            "retried too. Needs 'repair:' in the config. Prints the counts and the log depth\n"
            "left (above 0: run it again later)."
        ),
        epilog=_epilog(
            [
                "shadowproxy reconcile -c config/users.yaml",
            ],
            (
                "0 drained (also when some attempts failed: see the counts);\n"
                "1 a store error; 2 config error (also: no repair log configured)."
            ),
        ),
    )
    rec.add_argument("-c", "--config", required=True, metavar="FILE", help=CONFIG_HELP)

    from proxy import cli_migrate

    cli_migrate.add_parsers(sub, epilog=_epilog, config_help=CONFIG_HELP)

    from proxy import cli_replay

    cli_replay.add_parsers(sub, epilog=_epilog, config_help=CONFIG_HELP)

    from proxy import cli_report

    cli_report.add_parsers(sub, epilog=_epilog, config_help=CONFIG_HELP)

    flags = sub.add_parser(
        "flags",
        help="show, change and audit the live flags",
        description=(
            "Show, change and audit the live flags of a running instance through its admin\n"
            "API, with the admin token from the environment (the variable admin.token_env\n"
            "names; default SHADOWPROXY_ADMIN_TOKEN). A change goes through the same\n"
            "validation and audit as one made with the API itself."
        ),
        epilog=_epilog(
            [
                "export SHADOWPROXY_ADMIN_TOKEN=...",
                "shadowproxy flags show -c config/users.yaml",
                "shadowproxy flags set -c config/users.yaml users read_from=dynamodb --reason "
                '"readiness green for 24h"',
                "shadowproxy flags history -c config/users.yaml --target users",
            ],
            (
                "0 done; 2 admin API error (token not set, instance unreachable,\n"
                "change refused, bad FLAG=VALUE) or config error."
            ),
        ),
    )
    flags_sub = flags.add_subparsers(
        dest="flags_command", required=True, metavar="ACTION", help="show, set or history"
    )
    show = flags_sub.add_parser(
        "show",
        help="every flag and its value",
        description=(
            "Print every flag of every resource and route with its current value, then the\n"
            "flags' version and whether the flag store is healthy."
        ),
        epilog=_epilog(
            [
                "shadowproxy flags show -c config/users.yaml",
                "shadowproxy flags show -c config/http-dropin.yaml --admin-url "
                "http://10.0.0.5:9090",
            ],
            "0 shown; 2 admin API error or config error.",
        ),
    )
    set_ = flags_sub.add_parser(
        "set",
        help="change one flag",
        description=(
            "Change one flag of a resource or route and print 'TARGET.FLAG: OLD -> NEW'.\n"
            "Resource flags: read_from, write_to, shadow_reads, new_store_read_fraction;\n"
            "route flags: primary, shadow, sample. Fractions take 0.25, or 25%. Refused\n"
            "when unsafe: reading from a store not in write_to, an empty write_to, an\n"
            "unknown store or backend, a fraction outside 0..1, a route shadowing its own\n"
            "primary, or moving reads toward the new side while readiness fails (unless\n"
            "--force)."
        ),
        epilog=_epilog(
            [
                "shadowproxy flags set -c config/users.yaml users read_from=dynamodb --reason "
                '"readiness green for 24h"',
                "shadowproxy flags set -c config/users.yaml users new_store_read_fraction=0.1 "
                '--reason "canary 10%"',
                "shadowproxy flags set -c config/users.yaml users shadow_reads=0.25 --reason "
                '"halve shadow load"',
            ],
            "0 changed; 2 refused, admin API error or config error.",
        ),
    )
    history = flags_sub.add_parser(
        "history",
        help="the audit of flag changes",
        description=(
            "Print the audit of flag changes, newest first: when (UTC), who (cli:<user>,\n"
            "admin:token, config, guardrail), TARGET.FLAG: OLD -> NEW, forced or not, and\n"
            "the reason."
        ),
        epilog=_epilog(
            [
                "shadowproxy flags history -c config/users.yaml --target users",
                "shadowproxy flags history -c config/users.yaml --limit 10",
            ],
            ("0 shown; 2 admin API error (also --limit outside 1..1000) or\nconfig error."),
        ),
    )
    for p in (show, set_, history):
        p.add_argument("-c", "--config", required=True, metavar="FILE", help=ADMIN_CONFIG_HELP)
        p.add_argument("--admin-url", metavar="URL", help=ADMIN_URL_HELP)
    set_.add_argument(
        "target", metavar="TARGET", help="resource or route name, e.g. users or users-get"
    )
    set_.add_argument(
        "assignment",
        metavar="FLAG=VALUE",
        help="FLAG=VALUE, e.g. read_from=dynamodb, write_to=postgres,dynamodb or sample=25%%",
    )
    set_.add_argument(
        "--reason",
        required=True,
        metavar="TEXT",
        help="why, kept in the audit; at most 1000 characters (required)",
    )
    set_.add_argument(
        "--force",
        action="store_true",
        help="move reads toward the new side, or stop writing the old store, even though the "
        "verdict fails; the audit marks the change forced (default: off)",
    )
    history.add_argument(
        "--target",
        metavar="NAME",
        help="only changes to this resource or route (default: every target)",
    )
    history.add_argument(
        "--limit",
        type=int,
        metavar="N",
        default=50,
        help="at most this many entries, 1 to 1000 (default: %(default)s)",
    )

    ready = sub.add_parser(
        "readiness",
        help="is it safe to flip reads? exit 0 only when ready",
        description=(
            "Is it safe to flip reads? Ask a running instance for the verdict per resource\n"
            "and per shadowed route over readiness.window_seconds (summed over every\n"
            "instance with readiness.store: redis): comparisons, mismatch rate, shadow\n"
            "error rate, the new side's p99 latency, operations never compared. Prints\n"
            "every criterion with its measured value and threshold; an unknown value is\n"
            "never ready. Each resource's stop-old-writes verdict follows (reads on the new\n"
            "store, a recent clean verify, an empty repair log); the exit status is the\n"
            "flip-reads verdict's. The admin token comes from the environment, as for 'flags'."
        ),
        epilog=_epilog(
            [
                "shadowproxy readiness -c config/users.yaml --resource users",
                "shadowproxy readiness -c config/http-dropin.yaml --route users-get --json",
            ],
            (
                "0 ready; 1 not ready; 2 admin API error (also an unknown\n"
                "resource or route) or config error."
            ),
        ),
    )
    ready.add_argument("-c", "--config", required=True, metavar="FILE", help=ADMIN_CONFIG_HELP)
    ready.add_argument(
        "--resource",
        "--route",
        dest="target",
        metavar="NAME",
        help="only this resource or route (default: every resource and shadowed route)",
    )
    ready.add_argument("--admin-url", metavar="URL", help=ADMIN_URL_HELP)
    ready.add_argument(
        "--json",
        action="store_true",
        help="print the whole verdict as JSON instead of text (default: off)",
    )

    demo = sub.add_parser(
        "demo",
        help="run a self-contained demo on embedded services",
        description=(
            "A self-contained demo: nothing else has to run. Needs the demo extra:\n"
            f"{DEMO_EXTRA}.\n\n"
            "store (default): an embedded DynamoDB endpoint (moto) and the local PostgreSQL\n"
            "($SHADOWPROXY_DEMO_PG_DSN, default postgresql://postgres@127.0.0.1:5432/postgres)\n"
            "or, when none answers, an embedded one (pgserver); loads users into both with\n"
            "four planted divergences, drives reads and writes through the proxy and prints\n"
            "what was found, with the URLs of the proxy, /metrics and /mismatches.\n"
            "http: two embedded users services, the proxy in front of them.\n\n"
            "It then serves until Ctrl-C, or until --duration seconds have passed."
        ),
        epilog=_epilog(
            [
                "shadowproxy demo",
                "shadowproxy demo --duration 30",
                "shadowproxy demo --story http --requests 1000 --duration 0",
                "SHADOWPROXY_DEMO_PG_DSN=postgresql://postgres@db:5432/postgres shadowproxy demo "
                "--users 500",
            ],
            (
                "0 done (also after Ctrl-C while it serves); 2 a module of the demo\n"
                "extra is missing (the message names the pip command)."
            ),
        ),
    )
    demo.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        default=None,
        help="stop after this many seconds in all, set-up included; 0 prints the report and "
        "exits (default: serve until Ctrl-C)",
    )
    demo.add_argument(
        "--story",
        choices=("store", "http"),
        default="store",
        help="store: PostgreSQL -> DynamoDB; http: two HTTP services (default: %(default)s)",
    )
    demo.add_argument(
        "--requests",
        type=int,
        metavar="N",
        default=400,
        help="http story: GETs to send through the proxy (default: %(default)s)",
    )
    demo.add_argument(
        "--users",
        type=int,
        metavar="N",
        default=3000,
        help="store story: users to load into both stores (default: %(default)s)",
    )
    return parser


def _aws_targets(settings: Settings) -> list[str]:
    """Resolve each DynamoDB backend's region and endpoint as ``serve`` will, so a config
    that cannot start (no region anywhere) fails here too."""
    from proxy.store.aws import resolve

    lines = []
    for name, backend in settings.backends.items():
        if isinstance(backend, DynamoDBBackend):
            target = resolve(backend, os.environ, name=name)
            lines.append(f"  {name}: DynamoDB {target.url} (region {target.region})")
    return lines


def _warnings(settings: Settings) -> list[str]:
    return _repair_warnings(settings) + _rate_limit_warnings(settings)


def _rate_limit_warnings(settings: Settings) -> list[str]:
    limits = settings.rate_limits
    if limits is None or not limits.configured() or limits.store != "memory":
        return []
    if settings.workers <= 1:
        return []
    return [
        f"rate_limits.store is memory with workers={settings.workers}: each worker keeps its "
        f"own buckets, so this instance allows {settings.workers} times every rate; use "
        "rate_limits.store redis"
    ]


def _repair_warnings(settings: Settings) -> list[str]:
    dual = [n for n, r in settings.resources.items() if len(set(r.flags.write_to)) > 1]
    if dual and (settings.repair is None or settings.repair.kind == "memory"):
        return [
            f"resources {', '.join(dual)} write two stores with the repair log in memory "
            "(no 'repair:' section): not shared between instances and lost in a crash; "
            "use repair.kind redis or postgres with more than one instance"
        ]
    if not dual or settings.repair is None:
        return []
    grace = settings.repair.intent_grace_seconds
    lines = []
    used = {s.backend for n in dual for s in settings.resources[n].stores.values()}
    for name in sorted(used):
        timeout = getattr(settings.backends[name], "timeout_seconds", 0.0)
        if 2 * timeout > grace:
            lines.append(
                f"repair.intent_grace_seconds={grace:g} is under twice backends.{name}."
                f"timeout_seconds={timeout:g}: a dual write is cut (504) at {grace / 2:g} s, "
                "before the store's own timeout"
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check-config":
            settings = load_settings(args.config)
            targets = _aws_targets(settings)  # where each DynamoDB backend would connect
            routes, resources = len(settings.routes), len(settings.resources)
            print(
                f"{args.config}: OK ({len(settings.backends)} backends, {routes} routes, "
                f"{resources} resources)"
            )
            for line in targets:
                print(line)
            for line in _warnings(settings):
                print(f"warning: {line}", file=sys.stderr)
            return 0
        if args.command in ("init-stores", "reconcile"):
            from proxy.resources import admin_ops

            command = (
                admin_ops.init_stores if args.command == "init-stores" else admin_ops.reconcile
            )
            settings = load_settings(args.config)
            if args.command == "reconcile":  # its progress lines, when not on a terminal
                configure_logging(settings.logging.format, settings.logging.level)
            for line in asyncio.run(command(settings)):
                print(line)
            return 0
        if args.command in ("backfill", "verify"):
            from proxy import cli_migrate

            return cli_migrate.run(args)
        if args.command in ("replay", "export-corpus"):
            from proxy import cli_replay

            return cli_replay.run(args)
        if args.command == "report":
            from proxy import cli_report

            return cli_report.run(args)
        if args.command in ("flags", "readiness"):
            return _admin_command(args)
        if args.command == "serve":
            return _serve(args.config, args.workers)
        if args.command == "demo":
            return _demo(args)
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


def _demo(args: argparse.Namespace) -> int:
    try:
        from proxy.demo import run_demo

        return asyncio.run(
            run_demo(
                story=args.story,
                duration=args.duration,
                requests=args.requests,
                users=args.users,
            )
        )
    except ImportError as e:
        missing = _demo_module(e)
        if missing is None:
            raise
        print(
            f"shadowproxy: demo needs {missing}, which is not installed ({e}); "
            f"install the demo extra: {DEMO_EXTRA}",
            file=sys.stderr,
        )
        return 2
    except SystemExit as e:
        # The store story turns a missing pgserver (needed only when no PostgreSQL answers)
        # into SystemExit(message), chained from the ImportError; the message names the fix.
        cause = e.__cause__
        if not isinstance(cause, ImportError) or _demo_module(cause) is None:
            raise
        print(f"shadowproxy: demo: {e.code}", file=sys.stderr)
        return 2


def _demo_module(error: ImportError) -> str | None:
    """The demo extra's module whose absence ``error`` reports, else None."""
    top = (error.name or "").partition(".")[0]
    return top if top in DEMO_MODULES else None


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
        runner.run(serve(settings, reuse_port=_is_worker(), freeze_heap=True))
    return 0


def _is_worker() -> bool:
    return os.environ.get("SHADOWPROXY_WORKER") == "1"


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - optional speed-up
        return None
    return uvloop.new_event_loop
