"""TLS to backends: the certificate checked against a CA file or the system's, or not at all."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web

from proxy.errors import ConfigError
from proxy.settings import settings_from_mapping
from tests.support.servers import RunningProxy, start_proxy

pytestmark = pytest.mark.integration

BODY = {"id": 1, "name": "Ada", "over": "tls"}


@dataclass
class TlsBackend:
    url: str
    ca_file: str
    seen: list[str]  # request targets
    sni: list[str | None]  # the server names clients asked for in their TLS hello


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def _serve(ca: trustme.CA, tmp_path: Path, *names: str) -> AsyncIterator[TlsBackend]:
    seen: list[str] = []
    sni: list[str | None] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.raw_path)
        return web.json_response(BODY)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    context.sni_callback = lambda _sock, name, _context: sni.append(name)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = runner.addresses[0][1]
        yield TlsBackend(f"https://127.0.0.1:{port}", str(ca_file), seen, sni)
    finally:
        await runner.cleanup()


@pytest.fixture
async def backend(ca: trustme.CA, tmp_path: Path) -> AsyncIterator[TlsBackend]:
    """A certificate for localhost and 127.0.0.1, issued by the test CA."""
    async for served in _serve(ca, tmp_path, "localhost", "127.0.0.1"):
        yield served


@pytest.fixture
async def named_backend(ca: trustme.CA, tmp_path: Path) -> AsyncIterator[TlsBackend]:
    """A certificate for backend.internal only, served on 127.0.0.1."""
    async for served in _serve(ca, tmp_path, "backend.internal"):
        yield served


def config(url: str, tmp_path: Path, **tls: Any) -> dict[str, Any]:
    return {
        "backends": {
            "secure": {"kind": "http", "url": url, "timeout_seconds": 5, "retries": 0, **tls}
        },
        "routes": [{"name": "r", "path": "/*", "methods": ["*"], "primary": "secure"}],
        "sink": {"kind": "jsonl", "path": str(tmp_path / "mismatches.jsonl")},
    }


async def get(proxy: RunningProxy, path: str = "/users/1?x=1") -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(proxy.url + path) as r:
        body: dict[str, Any] = await r.json()
        return r.status, body


async def answer_through(raw: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    proxy = await start_proxy(raw)
    try:
        return await get(proxy)
    finally:
        await proxy.stop()


async def test_certificate_checked_against_the_ca_file(backend: TlsBackend, tmp_path: Path) -> None:
    status, body = await answer_through(config(backend.url, tmp_path, tls_ca_file=backend.ca_file))
    assert (status, body) == (200, BODY)
    assert backend.seen == ["/users/1?x=1"]


async def test_certificate_for_localhost(backend: TlsBackend, tmp_path: Path) -> None:
    url = backend.url.replace("127.0.0.1", "localhost")
    status, body = await answer_through(config(url, tmp_path, tls_ca_file=backend.ca_file))
    assert (status, body) == (200, BODY)


async def test_untrusted_certificate_is_502(backend: TlsBackend, tmp_path: Path) -> None:
    """Without tls_ca_file the system's CAs are used, and they do not know the test CA."""
    status, body = await answer_through(config(backend.url, tmp_path))
    assert status == 502
    assert body["error"]["code"] == "bad_gateway"
    assert backend.seen == []


async def test_certificate_of_another_ca_is_502(backend: TlsBackend, tmp_path: Path) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    status, body = await answer_through(config(backend.url, tmp_path, tls_ca_file=str(other)))
    assert status == 502
    assert body["error"]["code"] == "bad_gateway"
    assert backend.seen == []


async def test_server_name_that_the_certificate_does_not_name_is_502(
    backend: TlsBackend, tmp_path: Path
) -> None:
    status, body = await answer_through(
        config(backend.url, tmp_path, tls_ca_file=backend.ca_file, tls_server_name="other.example")
    )
    assert status == 502
    assert body["error"]["code"] == "bad_gateway"
    assert backend.seen == []


async def test_server_name_is_used_for_sni_and_the_certificate_check(
    named_backend: TlsBackend, tmp_path: Path
) -> None:
    """A backend reached by address whose certificate names its service."""
    status, body = await answer_through(
        config(
            named_backend.url,
            tmp_path,
            tls_ca_file=named_backend.ca_file,
            tls_server_name="backend.internal",
        )
    )
    assert (status, body) == (200, BODY)
    assert named_backend.sni == ["backend.internal"]
    assert named_backend.seen == ["/users/1?x=1"]


async def test_host_the_certificate_does_not_name_is_502(
    named_backend: TlsBackend, tmp_path: Path
) -> None:
    """The control for the test above: without tls_server_name, 127.0.0.1 is checked."""
    status, body = await answer_through(
        config(named_backend.url, tmp_path, tls_ca_file=named_backend.ca_file)
    )
    assert status == 502
    assert body["error"]["code"] == "bad_gateway"


async def test_tls_verify_false_accepts_any_certificate(
    backend: TlsBackend, tmp_path: Path
) -> None:
    status, body = await answer_through(config(backend.url, tmp_path, tls_verify=False))
    assert (status, body) == (200, BODY)
    assert backend.seen == ["/users/1?x=1"]


async def test_missing_ca_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "ca.pem"
    raw = config("https://127.0.0.1:1", tmp_path, tls_ca_file=str(missing))
    settings_from_mapping(raw)  # the settings are valid: the file is read by build()
    with pytest.raises(ConfigError) as caught:
        await start_proxy(raw)
    assert "backends.secure.tls_ca_file" in str(caught.value)
    assert str(missing) in str(caught.value)


async def test_ca_file_that_is_not_pem_is_a_config_error(tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"backends\.secure\.tls_ca_file") as caught:
        await start_proxy(config("https://127.0.0.1:1", tmp_path, tls_ca_file=str(garbage)))
    assert str(garbage) in str(caught.value)


@pytest.mark.parametrize(
    ("key", "value"), [("tls_ca_file", "/etc/ssl/ca.pem"), ("tls_server_name", "b.internal")]
)
def test_tls_settings_on_a_plain_http_backend_are_refused(
    key: str, value: str, tmp_path: Path
) -> None:
    raw = config("http://127.0.0.1:8000", tmp_path, **{key: value})
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping(raw)
    message = str(caught.value)
    assert "backends.secure" in message
    assert key in message
    assert "https:// backends only" in message
