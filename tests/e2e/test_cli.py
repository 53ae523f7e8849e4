"""The CLI as a user runs it: check-config, serve (graceful stop, several workers), demo."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

import proxy
from tests.e2e.conftest import ROOT, run_cli, shadowproxy, wait_http
from tests.support.servers import free_port

pytestmark = pytest.mark.e2e


class SlowJSON(BaseHTTPRequestHandler):
    delay = 0.0

    def do_GET(self) -> None:
        time.sleep(self.delay if "slow" in self.path else 0)
        body = b'{"id": 1, "name": "Ada"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return


def start_backend(delay: float = 0.0) -> ThreadingHTTPServer:
    handler = type("H", (SlowJSON,), {"delay": delay})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def write_config(tmp_path: Path, primary: int, shadow: int, **extra: Any) -> tuple[Path, int, int]:
    port, admin = free_port(), free_port()
    cfg = {
        "listen": {"port": port},
        "admin": {"port": admin},
        "logging": {"format": "json", "access_log": True},
        "backends": {
            "a": {"kind": "http", "url": f"http://127.0.0.1:{primary}"},
            "b": {"kind": "http", "url": f"http://127.0.0.1:{shadow}"},
        },
        "routes": [{"name": "all", "path": "/*", "primary": "a", "shadow": "b"}],
        "sink": {"kind": "jsonl", "path": str(tmp_path / "m.jsonl")},
        "flags": {"kind": "memory", "audit_path": str(tmp_path / "audit.jsonl")},
        **extra,
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, port, admin


def test_check_config_ok_and_bad(tmp_path: Path) -> None:
    good = run_cli("check-config", "-c", str(ROOT / "config" / "http-dropin.yaml"))
    assert good.returncode == 0, good.stderr
    assert "OK" in good.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "backends: {a: {kind: http, url: 'http://x'}}\n"
        "routes: [{name: r, path: /x, primary: a, sample: 7}]\n"
    )
    result = run_cli("check-config", "-c", str(bad))
    assert result.returncode == 2
    assert "routes[0].sample = 7" in result.stderr
    result = run_cli("check-config", "-c", str(bad), env={"SHADOWPROXY__ROUTES__0__SAMPLE": "1"})
    assert result.returncode == 0, result.stderr
    missing = run_cli("check-config", "-c", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "cannot read config file" in missing.stderr


def test_sigterm_finishes_in_flight_requests(tmp_path: Path, processes: list[Any]) -> None:
    backend = start_backend(delay=1.0)
    try:
        port = backend.server_address[1]
        cfg, proxy_port, admin_port = write_config(tmp_path, port, port)
        proc = subprocess.Popen(
            shadowproxy("serve", "-c", str(cfg)), cwd=ROOT, stderr=subprocess.PIPE
        )
        processes.append(proc)
        wait_http(f"http://127.0.0.1:{admin_port}/healthz")
        result: dict[str, Any] = {}

        def slow_request() -> None:
            with urllib.request.urlopen(f"http://127.0.0.1:{proxy_port}/slow", timeout=10) as r:
                result["status"], result["body"] = r.status, r.read()

        client = threading.Thread(target=slow_request)
        client.start()
        time.sleep(0.3)  # the request is in flight at the primary
        proc.send_signal(signal.SIGTERM)
        client.join(timeout=15)
        assert result == {"status": 200, "body": b'{"id": 1, "name": "Ada"}'}
        assert proc.wait(timeout=20) == 0
        assert proc.stderr is not None
        log = proc.stderr.read().decode()
        proc.stderr.close()
        assert '"msg":"request"' in log and '"status":200' in log
        assert "shutting down" in log
    finally:
        backend.shutdown()
        backend.server_close()


def test_workers_share_the_port_and_sum_metrics(tmp_path: Path, processes: list[Any]) -> None:
    backend = start_backend()
    try:
        port = backend.server_address[1]
        cfg, proxy_port, admin_port = write_config(tmp_path, port, port)
        proc = subprocess.Popen(
            shadowproxy("serve", "-c", str(cfg), "--workers", "2"),
            cwd=ROOT,
            stderr=subprocess.DEVNULL,
        )
        processes.append(proc)
        wait_http(f"http://127.0.0.1:{admin_port}/healthz")
        time.sleep(1.0)  # let the second worker bind too
        for _ in range(40):
            req = urllib.request.Request(f"http://127.0.0.1:{proxy_port}/users/1")
            with urllib.request.urlopen(req, timeout=5) as r:
                assert r.status == 200
        deadline = time.monotonic() + 15
        total = 0.0
        while time.monotonic() < deadline:
            url = f"http://127.0.0.1:{admin_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as r:
                text = r.read().decode()
            total = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("shadowproxy_requests_total{")
            )
            matches = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("shadowproxy_comparisons_total{") and "match" in line
            )
            if total == 40 and matches == 40:
                break
            time.sleep(0.1)
        assert total == 40
        assert matches == 40
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        backend.shutdown()
        backend.server_close()


def test_store_demo_finds_every_planted_divergence_and_nothing_else() -> None:
    env = {"SHADOWPROXY_ADMIN_TOKEN": "demo-token"}
    result = run_cli("demo", "--duration", "0", "--users", "400", env=env, timeout=180)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("    found  ") == 4, out
    assert "MISSED" not in out
    assert "nothing else reported" in out
    assert "users get" in out and "mismatch=4" in out
    assert "/metrics" in out and "/mismatches" in out
    assert "someone.else@example.org" not in out  # PII redacted in the printed example


def test_http_demo_finds_every_planted_divergence() -> None:
    env = {"SHADOWPROXY_ADMIN_TOKEN": "demo-token"}
    result = run_cli("demo", "--story", "http", "--duration", "0", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "mismatch summary" in out
    assert "body.email" in out and "body.age" in out and "body.created_at" in out
    assert "status" in out  # the user missing in the candidate
    assert "/metrics" in out and "/mismatches" in out
    assert "user7@example" not in out  # PII redacted in the printed example


def test_version_help_and_usage_errors() -> None:
    version = run_cli("--version")
    assert version.returncode == 0
    assert version.stdout == f"shadowproxy {proxy.__version__}\n"
    top = run_cli("--help")
    assert top.returncode == 0
    assert "exit codes:" in top.stdout and "  130  interrupted" in top.stdout
    flags_set = run_cli("flags", "set", "--help")
    assert flags_set.returncode == 0
    assert "shadowproxy flags set -c config/users.yaml users read_from=dynamodb" in flags_set.stdout
    usage = run_cli("serve")  # no -c
    assert usage.returncode == 2 and "required: -c/--config" in usage.stderr


def test_documented_exit_codes_of_admin_and_store_commands() -> None:
    users = str(ROOT / "config" / "users.yaml")
    no_token = run_cli("flags", "show", "-c", users, env={"SHADOWPROXY_ADMIN_TOKEN": ""})
    assert no_token.returncode == 2
    assert no_token.stderr == "shadowproxy: set SHADOWPROXY_ADMIN_TOKEN to the admin token\n"
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {"SHADOWPROXY_ADMIN_TOKEN": "t"}
    unreachable = run_cli("readiness", "-c", users, "--admin-url", url, env=env)
    assert unreachable.returncode == 2 and "cannot reach the admin API" in unreachable.stderr
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    store = run_cli("init-stores", "-c", users, env={"SHADOWPROXY__BACKENDS__RDS__DSN": dsn})
    assert store.returncode == 1
    assert "shadowproxy: store error: StoreUnavailable: postgres" in store.stderr
