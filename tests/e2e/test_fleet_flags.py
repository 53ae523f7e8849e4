"""Two proxy processes sharing Redis: a flip through one reaches the other within a second;
the CLI changes flags and reads the audit and readiness through the admin API."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.request
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import ROOT, run_cli, shadowproxy, wait_http
from tests.e2e.test_cli import SlowJSON
from tests.support.servers import free_port

pytestmark = pytest.mark.e2e
TOKEN = "fleet-token"


def get_flags(admin_port: int) -> dict[str, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{admin_port}/flags")
    request.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(request, timeout=5) as r:
        return json.loads(r.read())


@pytest.fixture
def backend() -> Any:
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowJSON)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_flip_through_one_instance_reaches_the_other(
    tmp_path: Path, backend: ThreadingHTTPServer, prefix: str, processes: list[Any]
) -> None:
    port = backend.server_address[1]
    admin_ports = [free_port(), free_port()]
    cfg = {
        "logging": {"format": "json", "access_log": False},
        "backends": {
            "a": {"kind": "http", "url": f"http://127.0.0.1:{port}"},
            "b": {"kind": "http", "url": f"http://127.0.0.1:{port}"},
        },
        "routes": [{"name": "r", "path": "/*", "primary": "a", "shadow": "b", "sample": 1.0}],
        "sink": {"kind": "jsonl", "path": str(tmp_path / "m.jsonl")},
        "flags": {"kind": "redis", "prefix": prefix, "poll_seconds": 0.25},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "SHADOWPROXY_ADMIN_TOKEN": TOKEN}
    for admin in admin_ports:
        instance_env = {
            **env,
            "SHADOWPROXY__LISTEN__PORT": str(free_port()),
            "SHADOWPROXY__ADMIN__PORT": str(admin),
        }
        proc = subprocess.Popen(
            shadowproxy("serve", "-c", str(path)), cwd=ROOT, env=instance_env,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        processes.append(proc)
    for admin in admin_ports:
        wait_http(f"http://127.0.0.1:{admin}/healthz")
    assert get_flags(admin_ports[1])["flags"]["r.sample"] == 1.0

    first = f"http://127.0.0.1:{admin_ports[0]}"
    cli_env = {"SHADOWPROXY_ADMIN_TOKEN": TOKEN}
    result = run_cli(
        "flags", "set", "-c", str(path), "--admin-url", first, "r", "sample=0.25",
        "--reason", "halve the shadow load", env=cli_env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "r.sample: 1.0 -> 0.25" in result.stdout
    flipped = time.monotonic()
    seen = None
    while time.monotonic() - flipped < 5:
        if get_flags(admin_ports[1])["flags"]["r.sample"] == 0.25:
            seen = time.monotonic() - flipped
            break
        time.sleep(0.02)
    assert seen is not None, "the other instance never saw the flip"
    print(f"flip seen by the second instance after {seen * 1000:.0f} ms")
    assert seen < 1.0

    history = run_cli("flags", "history", "-c", str(path), "--admin-url", first, env=cli_env)
    assert history.returncode == 0, history.stderr
    newest = history.stdout.splitlines()[0]
    assert "cli:" in newest and "r.sample: 1.0 -> 0.25" in newest
    assert "halve the shadow load" in newest

    refused = run_cli(
        "flags", "set", "-c", str(path), "--admin-url", first, "r", "shadow=a",
        "--reason", "oops", env=cli_env,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "shadow" in refused.stderr

    ready = run_cli("readiness", "-c", str(path), "--admin-url", first, env=cli_env)
    assert ready.returncode == 1  # nothing compared yet: not ready
    assert "NOT READY" in ready.stdout and "comparisons" in ready.stdout

    no_token = run_cli("flags", "show", "-c", str(path), "--admin-url", first, env={
        "SHADOWPROXY_ADMIN_TOKEN": ""})  # fmt: skip
    assert no_token.returncode == 2 and "SHADOWPROXY_ADMIN_TOKEN" in no_token.stderr
