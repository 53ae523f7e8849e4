"""No secret leaves a real ``shadowproxy serve`` process through its logs, its sink or its
admin API.

Two real upstream servers run in the test process; the proxy runs as a user runs it (a
subprocess of ``python -m proxy serve -c <cfg>``). Secrets are planted everywhere a client
can put them (credential headers, query values, a JSON body, malformed requests that aiohttp's
parser refuses and would quote) and in the upstreams' answers (PII in HTML pages). Then the
whole stderr and stdout, every sink line and the ``/mismatches`` answer are searched for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from proxy.logs import MALFORMED_BURST, MALFORMED_EVERY_SECONDS
from tests.e2e.conftest import ROOT, shadowproxy
from tests.support.servers import Handler, Upstream, free_port

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "admin-token-E2E-not-to-be-logged"
REDACTION_KEY = "redaction-key-E2E-not-to-be-logged"

PRIMARY_PAGE = (
    "<html><head><title>Account</title></head><body><p>Contact: email "
    "jane.secret@example.com, ssn 123-45-6789</p></body></html>"
)
SHADOW_PAGE = (
    "<html><head><title>Account</title></head><body><p>Contact: email "
    "john.shadowside@example.org, ssn 555-12-3456, phone +1-555-0199</p></body></html>"
)

PLANTED = (
    "SECRET-BEARER-1",
    "SECRET-COOKIE-2",
    "SECRET-ADMIN-3",
    "secret.query@example.com",
    "secret.query%40example.com",
    "SECRET-TOKEN-4",
    "secret.body@example.com",
    "987-65-4321",
    "SECRET-MALFORMED-5",
    "SECRET-MALFORMED-6",
    "SECRET-LONG-7",
    "jane.secret@example.com",
    "123-45-6789",
    "john.shadowside@example.org",
    "555-12-3456",
    "+1-555-0199",
    ADMIN_TOKEN,
    REDACTION_KEY,
)

# (method, path) of the well-formed requests: each one is shadowed and is a mismatch.
NORMAL = (
    ("GET", "/account/bearer"),
    ("GET", "/account/cookie"),
    ("GET", "/account/admin-token"),
    ("GET", "/search"),
    ("POST", "/submit"),
)

MALFORMED = (
    b"GET /x HTTP/1.1\r\nAuthorization: Bearer SECRET-MALFORMED-5\x01\r\n\r\n",
    b"GET /x HTTP/1.1\r\nAuthorization : Bearer SECRET-MALFORMED-6\r\n\r\n",
    b"GET /x HTTP/1.1\r\nCookie: " + b"SECRET-LONG-7" * 700 + b"\r\n\r\n",  # ~9 KB
)
MALFORMED_ERRORS = (
    "BadHttpMessage: Invalid header value char",
    "BadHttpMessage: Invalid header token",
    "LineTooLong: Got more than 8190 bytes when reading",
)
FLOOD = 50
REFUSED = "malformed request refused"


@dataclass
class Running:
    proc: asyncio.subprocess.Process
    proxy_url: str
    admin_url: str
    proxy_port: int
    stdout_path: Path
    stderr_path: Path
    sink_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="backslashreplace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="backslashreplace")


def html(page: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(text=page, content_type="text/html")

    return handler


def write_config(tmp_path: Path, fmt: str, primary: str, shadow: str) -> tuple[Path, int, int]:
    port, admin = free_port(), free_port()
    cfg = {
        "listen": {"port": port},
        "admin": {"port": admin},
        "logging": {"format": fmt, "level": "INFO", "access_log": True},
        "backends": {
            "primary": {"kind": "http", "url": primary},
            "shadow": {"kind": "http", "url": shadow},
        },
        "routes": [
            {
                "name": "all",
                "path": "/*",
                "methods": ["*"],
                "primary": "primary",
                "shadow": "shadow",
                "shadow_methods": ["GET", "POST"],
            }
        ],
        "sink": {"kind": "jsonl", "path": str(tmp_path / "mismatches.jsonl")},
        "flags": {"kind": "memory", "audit_path": str(tmp_path / "flags-audit.jsonl")},
        "redaction": {},  # the default fields: email, phone, password, ssn, token
    }
    path = tmp_path / "shadowproxy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, port, admin


@contextlib.asynccontextmanager
async def running_proxy(
    tmp_path: Path, fmt: str, primary: Upstream, shadow: Upstream
) -> AsyncIterator[Running]:
    """``shadowproxy serve`` as a subprocess, ready (admin /healthz answers); always killed."""
    cfg, port, admin = write_config(tmp_path, fmt, primary.url, shadow.url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHADOWPROXY")}
    env |= {"SHADOWPROXY_ADMIN_TOKEN": ADMIN_TOKEN, "SHADOWPROXY_REDACTION_KEY": REDACTION_KEY}
    out_path, err_path = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *shadowproxy("serve", "-c", str(cfg)), cwd=ROOT, env=env, stdout=out, stderr=err
        )
    running = Running(
        proc,
        f"http://127.0.0.1:{port}",
        f"http://127.0.0.1:{admin}",
        port,
        out_path,
        err_path,
        tmp_path / "mismatches.jsonl",
    )
    try:
        await wait_ready(running)
        yield running
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await asyncio.wait_for(proc.wait(), 10)


async def wait_ready(running: Running, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if running.proc.returncode is not None:
                raise AssertionError(f"shadowproxy exited early:\n{running.stderr()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                url = running.admin_url + "/healthz"
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise AssertionError(f"admin /healthz did not answer within {timeout}s:\n{running.stderr()}")


async def stop(running: Running) -> int:
    running.proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(running.proc.wait(), 20)


async def raw_request(port: int, data: bytes, timeout: float = 2.0) -> bytes:
    """Send ``data`` on a fresh connection; what came back before the server closed it."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(data)
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(writer.drain(), timeout)
        try:
            return await asyncio.wait_for(reader.read(), timeout)
        except ConnectionError:  # refused mid-send: the server may reset the connection
            return b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def send_normal_requests(session: aiohttp.ClientSession, proxy_url: str) -> None:
    secrets = [
        {"headers": {"Authorization": "Bearer SECRET-BEARER-1"}},
        {"headers": {"Cookie": "session=SECRET-COOKIE-2"}},
        {"headers": {"X-Admin-Token": "SECRET-ADMIN-3"}},
        {"params": {"email": "secret.query@example.com", "token": "SECRET-TOKEN-4"}},
        {"json": {"email": "secret.body@example.com", "ssn": "987-65-4321"}},
    ]
    for (method, path), kwargs in zip(NORMAL, secrets, strict=True):
        async with session.request(method, proxy_url + path, **kwargs) as r:
            assert r.status == 200
            assert await r.text() == PRIMARY_PAGE  # drop-in: the primary's answer, exactly


async def wait_for_mismatches(
    session: aiohttp.ClientSession, admin_url: str, count: int, timeout: float = 15.0
) -> str:
    """The raw JSON text of GET /mismatches once it holds ``count`` records."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        async with session.get(admin_url + "/mismatches?limit=50", headers=headers) as r:
            assert r.status == 200, await r.text()
            text = await r.text()
        if json.loads(text)["count"] >= count:
            return text
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} mismatches within {timeout}s: {text}")


TEXT_LINE = re.compile(r"\d\d:\d\d:\d\d (?P<level>[A-Z]+) +(?P<rest>.*)")


def parse_text_line(line: str) -> dict[str, str]:
    """A TextFormatter line: ``HH:MM:SS LEVEL   message  key=value key=value``."""
    match = TEXT_LINE.fullmatch(line)
    assert match is not None, f"not a log line: {line!r}"
    msg, _, extras = match["rest"].partition("  ")
    fields = dict(item.partition("=")[::2] for item in re.split(r" (?=[a-z_]+=)", extras) if item)
    return {**fields, "level": match["level"], "msg": msg}


def log_lines(stderr: str, fmt: str) -> list[dict[str, Any]]:
    lines = stderr.splitlines()
    if fmt == "json":
        parsed = []
        for line in lines:
            try:
                parsed.append(json.loads(line))
            except json.JSONDecodeError:
                raise AssertionError(f"a stderr line is not JSON: {line!r}") from None
        return parsed
    return [parse_text_line(line) for line in lines if not line.startswith("  | ")]


def assert_no_planted_secret(where: str, text: str) -> None:
    found = [s for s in PLANTED if s.lower() in text.lower()]
    assert not found, f"{where} holds {found}:\n{text[:4000]}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fmt", ["json", "text"])
async def test_no_planted_secret_reaches_logs_sink_or_admin(tmp_path: Path, fmt: str) -> None:
    primary = await Upstream(html(PRIMARY_PAGE)).start()
    shadow = await Upstream(html(SHADOW_PAGE)).start()
    try:
        async with running_proxy(tmp_path, fmt, primary, shadow) as running:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
                await send_normal_requests(session, running.proxy_url)

                answers = [await raw_request(running.proxy_port, data) for data in MALFORMED]
                started = time.monotonic()
                for _ in range(FLOOD):
                    with contextlib.suppress(TimeoutError, ConnectionError):
                        await raw_request(running.proxy_port, MALFORMED[0], timeout=1.0)
                flood_seconds = time.monotonic() - started
                # once the limiter refilled, one more passes and says how many were left out
                await asyncio.sleep(MALFORMED_EVERY_SECONDS * 1.2)
                answers.append(await raw_request(running.proxy_port, MALFORMED[1]))

                mismatches = await wait_for_mismatches(session, running.admin_url, len(NORMAL))
            assert await stop(running) == 0
            stderr, stdout = running.stderr(), running.stdout()
    finally:
        await primary.stop()
        await shadow.stop()

    # the secrets did go through the proxy: their absence below means something
    seen = {s.path_qs: dict(s.headers) for s in primary.seen}
    assert seen["/account/bearer"]["Authorization"] == "Bearer SECRET-BEARER-1"
    assert seen["/account/cookie"]["Cookie"] == "session=SECRET-COOKIE-2"
    assert seen["/account/admin-token"]["X-Admin-Token"] == "SECRET-ADMIN-3"
    assert b"987-65-4321" in next(s.body for s in shadow.seen if s.method == "POST")
    for answer in (answers[0], answers[1], answers[-1]):
        assert re.match(rb"HTTP/1\.[01] 400 ", answer), answer[:200]
    # the long header may be refused before it is all sent: then the connection is reset
    assert answers[2] == b"" or re.match(rb"HTTP/1\.[01] 400 ", answers[2]), answers[2][:200]

    # nothing planted anywhere
    assert_no_planted_secret("stderr", stderr)
    assert_no_planted_secret("stdout", stdout)
    sink_lines = running.sink_path.read_text().splitlines()
    for line in sink_lines:
        assert_no_planted_secret("a sink line", line)
    assert_no_planted_secret("GET /mismatches", mismatches)

    # things were logged: one access line per request, refused requests as short lines
    lines = log_lines(stderr, fmt)
    requests = [entry for entry in lines if entry.get("msg") == "request"]
    assert sorted((e["method"], e["path"]) for e in requests) == sorted(NORMAL), requests
    assert all(str(e["status"]) == "200" and e["route"] == "all" for e in requests)
    assert any(e.get("msg") == "serving" for e in lines)
    assert any(e.get("msg") == "shutting down" for e in lines)
    refused = [entry for entry in lines if entry.get("msg") == REFUSED]
    assert refused, stderr
    assert [e["error"] for e in refused[:3]] == list(MALFORMED_ERRORS)
    assert "Traceback" not in stderr
    if fmt == "text":
        assert not any(line.startswith("  | ") for line in stderr.splitlines()), stderr

    # rate limit: the burst, about one a second after it, and a count of those left out
    total = len(MALFORMED) + FLOOD + 1
    allowed = MALFORMED_BURST + 2 + int(flood_seconds / MALFORMED_EVERY_SECONDS)
    assert MALFORMED_BURST < len(refused) <= allowed, (len(refused), flood_seconds)
    left_out = sum(int(e.get("left_out", 0)) for e in refused)
    assert int(refused[-1].get("left_out", 0)) > 0, refused[-1]
    assert len(refused) + left_out == total, (len(refused), left_out)

    # the sink: one record per shadowed request, bodies shown as size, kind and keyed token
    records = [json.loads(line) for line in sink_lines]
    assert len(records) == len(NORMAL)
    for record in records:
        assert record["outcome"] == "mismatch"
        (body,) = [d for d in record["differences"] if d["path"] == "body"]
        assert body["kind"] == "changed"
        for side in (body["primary"], body["shadow"]):
            assert re.fullmatch(r"\d+ bytes html redacted:[0-9a-f]{16}", side), side
        assert body["primary"].startswith(f"{len(PRIMARY_PAGE.encode())} bytes html redacted:")
        assert body["shadow"].startswith(f"{len(SHADOW_PAGE.encode())} bytes html redacted:")
    (search,) = [r for r in records if r["path"].startswith("/search?")]
    assert re.fullmatch(
        r"/search\?email=redacted%3A[0-9a-f]{16}&token=redacted%3A[0-9a-f]{16}", search["path"]
    ), search["path"]
    admin_records = json.loads(mismatches)["mismatches"]
    assert sorted(r["request_id"] for r in admin_records) == sorted(
        r["request_id"] for r in records
    )


@pytest.mark.timeout(60)
async def test_malformed_absolute_target_credentials_stay_out_of_the_log(tmp_path: Path) -> None:
    primary = await Upstream(html(PRIMARY_PAGE)).start()
    shadow = await Upstream(html(SHADOW_PAGE)).start()
    try:
        async with running_proxy(tmp_path, "json", primary, shadow) as running:
            for data in (
                b"GET http://user:SECRET-USERINFO-8@/x HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET http:///x?token=SECRET-URL-9 HTTP/1.1\r\nHost: x\r\n\r\n",
            ):
                assert re.match(rb"HTTP/1\.[01] 400 ", await raw_request(running.proxy_port, data))
            assert await stop(running) == 0
            stderr = running.stderr()
    finally:
        await primary.stop()
        await shadow.stop()
    refused = [e for e in log_lines(stderr, "json") if e.get("msg") == REFUSED]
    assert len(refused) == 2, stderr
    assert "SECRET-USERINFO-8" not in stderr
    assert "SECRET-URL-9" not in stderr
