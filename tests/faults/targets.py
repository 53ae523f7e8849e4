"""What a fault scenario runs against: a proxy (its URL, its admin API), the fault relays in
front of its backends, and, when given, control of its process.

Locally (no options) everything is started here: a ``shadowproxy serve`` process per mode
(HTTP drop-in, store mode), the backend (``tests.faults.upstream``), moto's server, and the
relays on free loopback ports. Against a deployment the proxy is the user's; the relays
listen where the user's proxy was pointed and forward to the real backends.
"""

from __future__ import annotations

import asyncio
import copy
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.faults.relay import FaultRelay
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
PG_DSN = os.environ.get("SHADOWPROXY_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SHADOWPROXY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
TOKEN = "faults-admin-token-0123456789"
PRIMARY_TIMEOUT = 2.0
"""The local HTTP proxy's primary deadline (``timeout_seconds`` of its backend)."""


def wait_port(host: str, port: int, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what} not listening on {host}:{port} in {timeout:g}s"
                ) from None
            time.sleep(0.05)


def wait_healthy(admin_url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{admin_url}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{admin_url}/healthz did not answer 200 within {timeout:g}s")
        time.sleep(0.05)


def wait_gone(admin_url: str, timeout: float = 60.0) -> None:
    """Until the admin port stops answering (the process is gone)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{admin_url}/healthz", timeout=2).close()
        except urllib.error.HTTPError:
            pass  # answered, so still there
        except OSError:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{admin_url} still answers {timeout:g}s after the kill")
        time.sleep(0.1)


class Controller:
    """Control of the proxy's process: SIGKILL, start again, SIGTERM and its exit status."""

    def kill(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> int:
        raise NotImplementedError

    def pid(self) -> int | None:
        return None

    def logs(self) -> str:
        """The end of the proxy's log, when this side can read it ("" for a deployment)."""
        return ""


@dataclass
class LocalProcess(Controller):
    """``shadowproxy serve -c CONFIG`` as a child, started again on the same ports."""

    config: Path
    admin_url: str
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "proxy", "serve", "-c", str(self.config)],
                cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            wait_healthy(self.admin_url)
        except AssertionError as e:
            raise AssertionError(f"{e}; its log: {self.logs()}") from None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=90)

    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@dataclass
class Commands(Controller):
    """A deployment's process, controlled by the user's shell commands."""

    kill_command: str | None
    start_command: str | None
    stop_command: str | None
    admin_url: str
    pid_source: str | None = None  # a PID, or a file holding it (read each time)

    def _run(self, command: str | None, what: str) -> int:
        assert command, f"no {what} given"
        done = subprocess.run(command, shell=True, timeout=300)
        return done.returncode

    def kill(self) -> None:
        self._run(self.kill_command, "--kill-command")  # its status may be the victim's
        wait_gone(self.admin_url)

    def start(self) -> None:
        code = self._run(self.start_command, "--start-command")
        assert code == 0, f"--start-command exited {code}"
        wait_healthy(self.admin_url, timeout=120)

    def stop(self) -> int:
        return self._run(self.stop_command, "--stop-command")

    def pid(self) -> int | None:
        if not self.pid_source:
            return None
        if self.pid_source.isdigit():
            return int(self.pid_source)
        text = Path(self.pid_source).read_text().strip()
        assert text.isdigit(), f"--proxy-pid file {self.pid_source}: {text!r} is not a PID"
        return int(text)


@dataclass
class HttpTarget:
    """An HTTP drop-in proxy whose primary and shadow backends are relays."""

    proxy_url: str
    admin_url: str
    token: str | None
    primary: FaultRelay | None
    shadow: FaultRelay | None
    primary_direct: str | None  # the real primary, asked directly for the expected answers
    paths: list[str]
    controller: Controller | None
    local: bool
    route: str | None = None  # the route whose shadow metrics are read (local: users-get)


@dataclass
class StoreTarget:
    """A store-mode proxy; Redis (flags, cache) and DynamoDB reached through relays."""

    proxy_url: str
    admin_url: str
    token: str | None
    resource: str
    redis: FaultRelay | None
    dynamodb: FaultRelay | None
    config: Path | None  # for ``shadowproxy reconcile`` and ``verify``
    cli_env: dict[str, str]
    controller: Controller | None
    local: bool
    keys_dir: Path = field(default_factory=lambda: Path("."))


def relay(
    name: str, target: tuple[str, int], host: str = "127.0.0.1", port: int = 0, **kw: Any
) -> FaultRelay:
    return FaultRelay(target, listen=(host, port), name=name, **kw).start()


# -- local: everything started here ----------------------------------------------------------


@contextmanager
def local_http(tmp: Path) -> Iterator[HttpTarget]:
    with ExitStack() as stack:
        port = free_port()
        upstream = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.upstream", str(port)], cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        stack.callback(_end, upstream)
        wait_port("127.0.0.1", port, "the fault upstream")
        primary = relay("primary", ("127.0.0.1", port), record_ids=True)
        stack.callback(primary.stop)
        shadow = relay("shadow", ("127.0.0.1", port))
        stack.callback(shadow.stop)
        listen, admin = free_port(), free_port()
        cfg = {
            "listen": {"host": "127.0.0.1", "port": listen},
            "admin": {"host": "127.0.0.1", "port": admin},
            "workers": 1,
            "logging": {"format": "json", "access_log": False, "level": "WARNING"},
            "backends": {
                "legacy": {
                    "kind": "http",
                    "url": primary.url,
                    "timeout_seconds": PRIMARY_TIMEOUT,
                    "connect_timeout_seconds": 1,
                    "max_connections": 64,
                },
                "candidate": {
                    "kind": "http",
                    "url": shadow.url,
                    "timeout_seconds": 1,
                    "connect_timeout_seconds": 0.5,
                    "max_connections": 64,
                },
            },
            "routes": [
                {
                    "name": "users-get",
                    "path": "/users/{id}",
                    "methods": ["GET", "HEAD"],
                    "primary": "legacy",
                    "shadow": "candidate",
                    "sample": 1.0,
                    "compare": {"status": True, "headers": ["content-type"]},
                },
                {"name": "everything-else", "path": "/*", "methods": ["*"], "primary": "legacy"},
            ],
            "shadow": {
                "queue_size": 256,
                "concurrency": 32,
                "timeout_seconds": 1,
                "body_max_bytes": 1048576,
                "drain_seconds": 2,
                "diff_per_second": 20,
                "diff_burst": 10,
            },
            "sink": {"kind": "jsonl", "path": str(tmp / "http-mismatches.jsonl")},
            "flags": {"kind": "memory", "audit_path": str(tmp / "http-flags-audit.jsonl")},
        }
        config = tmp / "http.yaml"
        config.write_text(yaml.safe_dump(cfg))
        admin_url = f"http://127.0.0.1:{admin}"
        env = {**os.environ, "SHADOWPROXY_ADMIN_TOKEN": TOKEN}
        proc = LocalProcess(config, admin_url, env, tmp / "http-proxy.log")
        stack.callback(proc.close)
        proc.start()
        paths = [f"/users/{n}" for n in range(1, 41)] + ["/users/7?size=2097152", "/nothing"]
        yield HttpTarget(
            proxy_url=f"http://127.0.0.1:{listen}", admin_url=admin_url, token=TOKEN,
            primary=primary, shadow=shadow, primary_direct=f"http://127.0.0.1:{port}",
            paths=paths, controller=proc, local=True, route="users-get",
        )  # fmt: skip


@contextmanager
def local_store(tmp: Path, users: dict[str, Any]) -> Iterator[StoreTarget]:
    with ExitStack() as stack:
        moto_port = free_port()
        moto = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        stack.callback(_end, moto)
        wait_port("127.0.0.1", moto_port, "moto's server")
        redis_host, redis_port = _hostport(REDIS_URL, 6379)
        redis_relay = relay("redis", (redis_host, redis_port))
        stack.callback(redis_relay.stop)
        dynamodb = relay("dynamodb", ("127.0.0.1", moto_port))
        stack.callback(dynamodb.stop)
        prefix = f"test:faults:{uuid.uuid4().hex[:12]}"
        stack.callback(_delete_keys, prefix)
        table = f"faults_{uuid.uuid4().hex[:10]}"
        resource = copy.deepcopy(users)
        resource["stores"] = {
            "postgres": {"backend": "pg", "table": table},
            "dynamodb": {"backend": "ddb", "table": table},
        }
        resource["new_store"] = "dynamodb"
        resource["flags"] = {
            "read_from": "postgres",
            "write_to": ["postgres", "dynamodb"],
            "shadow_reads": 1.0,
        }
        resource["recheck_delay_seconds"] = 0.05
        resource["guardrail"] = {"enabled": False}
        resource["cache_ttl_seconds"] = 60
        relay_redis = f"redis://{redis_relay.address}/{_db(REDIS_URL)}"
        listen, admin = free_port(), free_port()
        cfg = {
            "listen": {"host": "127.0.0.1", "port": listen},
            "admin": {"host": "127.0.0.1", "port": admin},
            "logging": {"format": "json", "access_log": False, "level": "WARNING"},
            "backends": {
                "pg": {"kind": "postgres", "dsn": PG_DSN, "pool_max": 8},
                "ddb": {
                    "kind": "dynamodb",
                    "endpoint_url": dynamodb.url,
                    "region": "us-east-1",
                    "timeout_seconds": 2,
                },
            },
            "resources": {"users": resource},
            "sink": {"kind": "jsonl", "path": str(tmp / "store-mismatches.jsonl")},
            "flags": {
                "kind": "redis",
                "url": relay_redis,
                "prefix": f"{prefix}:flags",
                "poll_seconds": 0.25,
                "timeout_seconds": 0.5,
            },
            "cache": {"url": relay_redis, "prefix": f"{prefix}:cache"},
            "repair": {
                "kind": "redis",
                "url": REDIS_URL,
                "stream": f"{prefix}:repair",
                "interval_seconds": 0.2,
                "retry_after_seconds": 0.5,
                "late_write_seconds": 1,
                "intent_grace_seconds": 4,
            },
        }
        config = tmp / "store.yaml"
        config.write_text(yaml.safe_dump(cfg))
        cli_env = {**os.environ, **AWS, "SHADOWPROXY_ADMIN_TOKEN": TOKEN}
        made = subprocess.run(
            [sys.executable, "-m", "proxy", "init-stores", "-c", str(config)],
            cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        stack.callback(_drop_table, table)
        admin_url = f"http://127.0.0.1:{admin}"
        proc = LocalProcess(config, admin_url, cli_env, tmp / "store-proxy.log")
        stack.callback(proc.close)
        proc.start()
        yield StoreTarget(
            proxy_url=f"http://127.0.0.1:{listen}", admin_url=admin_url, token=TOKEN,
            resource="users", redis=redis_relay, dynamodb=dynamodb, config=config,
            cli_env=cli_env, controller=proc, local=True, keys_dir=tmp,
        )  # fmt: skip


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _hostport(url: str, default: int) -> tuple[str, int]:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    return parsed.hostname or "127.0.0.1", parsed.port or default


def _db(url: str) -> str:
    from urllib.parse import urlparse

    return urlparse(url).path.strip("/") or "0"


def _delete_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _drop_table(table: str) -> None:
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        finally:
            await conn.close()

    asyncio.run(drop())
