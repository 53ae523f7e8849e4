"""Options of the fault suite and the targets its scenarios run against (docs/faults.md).

No options: everything runs locally and every scenario runs. ``--proxy-url`` and
``--admin-url``: a deployment; fault relays listen on ``--relay-host`` at the relay ports and
forward to the ``--*-upstream`` backends, and a scenario whose relays, commands or config
were not given is deselected, with the reason in the summary.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import aiohttp
import pytest

from tests.faults.relay import FaultRelay, parse_hostport
from tests.faults.targets import (
    Commands,
    Controller,
    HttpTarget,
    StoreTarget,
    relay,
    wait_healthy,
)

# The resource store mode serves locally: tests/integration/api/conftest.py's USERS.
from tests.integration.api.conftest import USERS


@dataclass(frozen=True)
class Upstream:
    option: str
    relay_port_option: str
    default_port: int


UPSTREAMS = {
    "primary": Upstream("--primary-upstream", "--primary-relay-port", 18001),
    "shadow": Upstream("--shadow-upstream", "--shadow-relay-port", 18002),
    "redis": Upstream("--redis-upstream", "--redis-relay-port", 16379),
    "dynamodb": Upstream("--dynamodb-upstream", "--dynamodb-relay-port", 18000),
}
NEEDS = {
    **{name: f"{u.option} (and the proxy's {name} backend pointed at the relay)"
       for name, u in UPSTREAMS.items()},
    "kill": "--kill-command and --start-command",
    "stop": "--stop-command and --start-command",
    "store_config": "--store-config (for shadowproxy reconcile / verify)",
}  # fmt: skip


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("faults", "fault suite (tests/faults): run against a deployment")
    add = group.addoption
    add("--proxy-url", metavar="URL", help="the deployed proxy's port, e.g. http://10.0.0.5:8080")
    add("--admin-url", metavar="URL", help="its admin port, e.g. http://10.0.0.5:9090")
    add("--admin-token-env", metavar="NAME", default="SHADOWPROXY_ADMIN_TOKEN",
        help="environment variable holding the admin token (default %(default)s)")  # fmt: skip
    add("--relay-host", metavar="HOST", default="127.0.0.1",
        help="address the fault relays listen on (default %(default)s)")  # fmt: skip
    for name, u in UPSTREAMS.items():
        add(u.option, metavar="HOST:PORT", help=f"the real {name} backend the relay forwards to")
        add(u.relay_port_option, metavar="PORT", type=int, default=u.default_port,
            help=f"port of the {name} relay (default %(default)s)")  # fmt: skip
    add("--request-path", metavar="PATH", action="append", default=None,
        help="a deterministic GET path for the HTTP scenarios (repeat; default /)")  # fmt: skip
    add("--shadow-route", metavar="NAME", default=None,
        help="the route those paths take, for its shadow metrics (default: any route)")  # fmt: skip
    add("--resource", metavar="NAME", default="users",
        help="store mode: the resource written and read (default %(default)s)")  # fmt: skip
    add("--store-config", metavar="FILE",
        help="store mode: the config `shadowproxy reconcile` and `verify` run with")  # fmt: skip
    add("--kill-command", metavar="CMD", help="SIGKILLs the deployed proxy")
    add("--start-command", metavar="CMD", help="starts it again (the suite waits for /healthz)")
    add("--stop-command", metavar="CMD",
        help="SIGTERMs the proxy, waits for it and exits with its exit status")  # fmt: skip
    add("--proxy-pid", metavar="PID|FILE",
        help="the proxy's PID on this host, or a file holding it (read each time): its RSS "
        "is checked as locally")  # fmt: skip
    add("--assert-bounds", action="store_true",
        help="assert the mismatch scenario's throughput and p99 bounds")  # fmt: skip
    add("--fault-requests", metavar="N", type=int, default=3000,
        help="requests per shadow fault (default %(default)s)")  # fmt: skip
    add("--fault-writes", metavar="N", type=int, default=5000,
        help="dual writes of the DynamoDB scenario (default %(default)s)")  # fmt: skip
    add("--client-timeout", metavar="SECONDS", type=float, default=30.0,
        help="the clients' own timeout per request (default %(default)s)")  # fmt: skip


@dataclass
class Options:
    deployment: bool
    proxy_url: str | None
    admin_url: str | None
    token: str | None
    relay_host: str
    upstreams: dict[str, tuple[str, int]] = field(default_factory=dict)
    relay_ports: dict[str, int] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)


OPTIONS = pytest.StashKey[Options]()
DESELECTED = pytest.StashKey[list[tuple[str, str]]]()
FIGURES = pytest.StashKey[list[str]]()


def _url(value: str, option: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise pytest.UsageError(f"{option} {value!r}: expected http(s)://HOST:PORT")
    try:
        parsed.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as e:
        raise pytest.UsageError(f"{option} {value!r}: {e}") from None
    return value.rstrip("/")


def _options(config: pytest.Config) -> Options:
    get = config.getoption
    proxy_url, admin_url = get("proxy_url"), get("admin_url")
    deployment = bool(proxy_url or admin_url)
    given = [u.option for u in UPSTREAMS.values() if get(u.option.lstrip("-").replace("-", "_"))]
    given += [o for o in ("--kill-command", "--stop-command", "--start-command", "--store-config")
              if get(o.lstrip("-").replace("-", "_"))]  # fmt: skip
    if not deployment and given:
        raise pytest.UsageError(f"{given[0]} needs --proxy-url and --admin-url (a deployment)")
    if deployment and not (proxy_url and admin_url):
        raise pytest.UsageError("give both --proxy-url and --admin-url, or neither (local run)")
    options = Options(
        deployment=deployment,
        proxy_url=_url(proxy_url, "--proxy-url") if proxy_url else None,
        admin_url=_url(admin_url, "--admin-url") if admin_url else None,
        token=os.environ.get(get("admin_token_env")) if deployment else None,
        relay_host=get("relay_host"),
    )
    for name, u in UPSTREAMS.items():
        value = get(u.option.lstrip("-").replace("-", "_"))
        if value is not None:
            try:
                options.upstreams[name] = parse_hostport(value)
            except ValueError as e:
                raise pytest.UsageError(f"{u.option}: {e}") from None
        port = get(u.relay_port_option.lstrip("-").replace("-", "_"))
        if not 0 < port < 65536:
            raise pytest.UsageError(f"{u.relay_port_option} {port}: not a port (1-65535)")
        options.relay_ports[name] = port
    for option in ("fault_requests", "fault_writes"):
        if get(option) < 1:
            raise pytest.UsageError(f"--{option.replace('_', '-')} must be at least 1")
    if get("client_timeout") <= 0:
        raise pytest.UsageError("--client-timeout must be above 0")
    paths = get("request_path") or ["/"]
    bad = [p for p in paths if not p.startswith("/")]
    if bad:
        raise pytest.UsageError(f"--request-path {bad[0]!r}: a path starts with /")
    options.paths = paths
    pid = get("proxy_pid")
    if pid and not (pid.isdigit() or Path(pid).is_file()):
        raise pytest.UsageError(f"--proxy-pid {pid!r}: neither a PID nor a file")
    store_config = get("store_config")
    if store_config and not Path(store_config).is_file():
        raise pytest.UsageError(f"--store-config {store_config!r}: no such file")
    return options


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "needs(*what): a fault scenario's relays, commands or config; against a deployment "
        "it is deselected unless they are given (tests/faults)",
    )
    config.stash[OPTIONS] = _options(config)
    config.stash[DESELECTED] = []
    config.stash[FIGURES] = []


def _has(config: pytest.Config, need: str) -> bool:
    options = config.stash[OPTIONS]
    get = config.getoption
    if need in UPSTREAMS:
        return need in options.upstreams
    if need == "kill":
        return bool(get("kill_command") and get("start_command"))
    if need == "stop":
        return bool(get("stop_command") and get("start_command"))
    if need == "store_config":
        return bool(get("store_config"))
    raise AssertionError(f"unknown need {need!r}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.stash[OPTIONS].deployment:
        return  # locally every scenario runs
    keep, dropped = [], []
    for item in items:
        marker = item.get_closest_marker("needs")
        missing = [n for n in (marker.args if marker else ()) if not _has(config, n)]
        if missing:
            dropped.append(item)
            reason = "needs " + ", ".join(NEEDS[n] for n in missing)
            config.stash[DESELECTED].append((item.nodeid, reason))
        else:
            keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def pytest_report_header(config: pytest.Config) -> str | None:
    options = config.stash.get(OPTIONS, None)
    if options is None or not options.deployment:
        return None
    return f"faults: against {options.proxy_url} (admin {options.admin_url})"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    config = terminalreporter.config
    figures = config.stash.get(FIGURES, [])
    deselected = config.stash.get(DESELECTED, [])
    if figures:
        terminalreporter.section("fault suite: measured")
        for line in figures:
            terminalreporter.write_line(line)
    if deselected:
        terminalreporter.section("fault suite: deselected scenarios")
        for nodeid, reason in deselected:
            terminalreporter.write_line(f"{nodeid}: {reason}")


@pytest.fixture(scope="session")
def options(pytestconfig: pytest.Config) -> Options:
    return pytestconfig.stash[OPTIONS]


@pytest.fixture
async def http(pytestconfig: pytest.Config) -> AsyncIterator[aiohttp.ClientSession]:
    """A client session whose timeout per request is ``--client-timeout``."""
    timeout = aiohttp.ClientTimeout(total=pytestconfig.getoption("client_timeout"))
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(limit=64)
    ) as session:
        yield session


@pytest.fixture(scope="session")
def figures(pytestconfig: pytest.Config) -> list[str]:
    """Lines shown at the end of the run (throughput and latency of scenario b)."""
    return pytestconfig.stash[FIGURES]


def _relay(options: Options, name: str, **kw: object) -> FaultRelay | None:
    target = options.upstreams.get(name)
    if target is None:
        return None
    return relay(name, target, options.relay_host, options.relay_ports[name], **kw)


def _deployed_proxy_up(admin_url: str) -> None:
    try:
        wait_healthy(admin_url, timeout=30)
    except AssertionError as e:
        raise AssertionError(f"the deployed proxy is not up: {e}") from None


def _controller(config: pytest.Config, options: Options) -> Controller:
    get = config.getoption
    assert options.admin_url is not None
    return Commands(
        get("kill_command"), get("start_command"), get("stop_command"), options.admin_url,
        get("proxy_pid"),
    )  # fmt: skip


@pytest.fixture(scope="session")
def http_target(
    pytestconfig: pytest.Config, options: Options, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HttpTarget]:
    if not options.deployment:
        from tests.faults.targets import local_http

        with local_http(tmp_path_factory.mktemp("faults-http")) as target:
            yield target
        return
    assert options.proxy_url and options.admin_url
    _deployed_proxy_up(options.admin_url)
    primary = _relay(options, "primary", record_ids=True)
    shadow = _relay(options, "shadow")
    direct = options.upstreams.get("primary")
    try:
        yield HttpTarget(
            proxy_url=options.proxy_url, admin_url=options.admin_url, token=options.token,
            primary=primary, shadow=shadow,
            primary_direct=f"http://{direct[0]}:{direct[1]}" if direct else None,
            paths=options.paths, controller=_controller(pytestconfig, options), local=False,
            route=pytestconfig.getoption("shadow_route"),
        )  # fmt: skip
    finally:
        for r in (primary, shadow):
            if r is not None:
                r.stop()


@pytest.fixture(scope="session")
def store_target(
    pytestconfig: pytest.Config, options: Options, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StoreTarget]:
    tmp = tmp_path_factory.mktemp("faults-store")
    if not options.deployment:
        from tests.faults.targets import local_store

        with local_store(tmp, USERS) as target:
            yield target
        return
    assert options.proxy_url and options.admin_url
    _deployed_proxy_up(options.admin_url)
    redis = _relay(options, "redis")
    dynamodb = _relay(options, "dynamodb")
    config = pytestconfig.getoption("store_config")
    try:
        yield StoreTarget(
            proxy_url=options.proxy_url, admin_url=options.admin_url, token=options.token,
            resource=pytestconfig.getoption("resource"), redis=redis, dynamodb=dynamodb,
            config=Path(config) if config else None, cli_env=dict(os.environ),
            controller=_controller(pytestconfig, options), local=False, keys_dir=tmp,
        )  # fmt: skip
    finally:
        for r in (redis, dynamodb):
            if r is not None:
                r.stop()
