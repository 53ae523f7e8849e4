"""The DynamoDB store over TLS: moto's server behind a TLS-terminating forwarder whose
certificate a throwaway CA (trustme) signed. With that CA as the backend's ``ca_bundle``, as
``AWS_CA_BUNDLE`` or as the profile's ``ca_bundle``, the store works; without it the first
call fails at once with a store error that says what to configure."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trustme

from proxy.resources.stores import build_store
from proxy.settings import DynamoDBBackend
from proxy.store.base import Record, StoreError, StoreUnavailable
from proxy.store.dynamodb import DynamoDBStore
from proxy.store.schema import Schema

pytestmark = pytest.mark.integration


class TlsFront:
    """Accepts TCP on a loopback port, counts the connections, does the TLS handshake with
    its certificate and pipes the plaintext to ``target``."""

    def __init__(self, target: tuple[str, int], context: ssl.SSLContext) -> None:
        self.target = target
        self.context = context
        self.connections = 0
        self.handshakes_failed = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: list[list[asyncio.StreamWriter]] = []

    async def start(self) -> TlsFront:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        ends = [writer]
        self._open.append(ends)
        try:
            try:
                await writer.start_tls(self.context)
            except (ssl.SSLError, OSError):
                self.handshakes_failed += 1
                return
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            ends.append(up_writer)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._open.remove(ends)
            for end in ends:
                end.transport.abort()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for ends in self._open:
                for end in ends:
                    end.transport.abort()
            await self._server.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError, ssl.SSLError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    authority = trustme.CA()
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return authority, path


@pytest.fixture
async def front(moto_endpoint: str, ca: tuple[trustme.CA, Path]) -> AsyncIterator[TlsFront]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca[0].issue_cert("127.0.0.1", "localhost").configure_cert(context)
    split = urlsplit(moto_endpoint)
    assert split.hostname and split.port
    server = await TlsFront((split.hostname, split.port), context).start()
    yield server
    await server.stop()


@pytest.fixture
def aws_env(tmp_path: Path) -> dict[str, str]:
    """An environment with keys for moto and nothing else AWS: no AWS_CA_BUNDLE (this
    machine's own environment sets one), empty shared files."""
    config = tmp_path / "config"
    config.write_text("")
    return {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_CONFIG_FILE": str(config),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
    }


def write(path: str, text: str) -> None:
    Path(path).write_text(text)


def store_for(
    front: TlsFront, table: str, schema: Schema, env: dict[str, str], **keys: Any
) -> DynamoDBStore:
    backend = DynamoDBBackend(
        kind="dynamodb", endpoint_url=front.url, region="us-east-1", sdk_max_attempts=3, **keys
    )
    store = build_store(backend, table, schema, env, name="tls")
    assert isinstance(store, DynamoDBStore)
    return store


async def round_trip(store: DynamoDBStore, user: Record) -> None:
    async with store:
        await store.init()
        try:
            await store.put(user)
            assert await store.get(user["id"]) == user
        finally:
            await store._call("DeleteTable", TableName=store.table)


@pytest.mark.parametrize("where", ["ca_bundle", "AWS_CA_BUNDLE", "profile"])
async def test_the_ca_bundle_makes_the_endpoint_trusted(
    front: TlsFront,
    ca: tuple[trustme.CA, Path],
    aws_env: dict[str, str],
    users_schema: Schema,
    table_name: str,
    make_user: Any,
    where: str,
) -> None:
    keys: dict[str, Any] = {}
    if where == "ca_bundle":
        keys["ca_bundle"] = str(ca[1])
    elif where == "AWS_CA_BUNDLE":
        aws_env["AWS_CA_BUNDLE"] = str(ca[1])
    else:
        write(aws_env["AWS_CONFIG_FILE"], f"[default]\nca_bundle = {ca[1]}\n")
    store = store_for(front, table_name, users_schema, aws_env, **keys)
    assert store._http.ca_bundle == str(ca[1])
    await round_trip(store, make_user())
    assert front.connections >= 1 and front.handshakes_failed == 0


async def test_without_the_ca_the_first_call_fails_at_once_saying_what_to_set(
    front: TlsFront, aws_env: dict[str, str], users_schema: Schema, table_name: str
) -> None:
    store = store_for(front, table_name, users_schema, aws_env)
    assert store._http.ca_bundle is None  # the system's CAs, which do not know trustme's
    async with store:
        with pytest.raises(StoreUnavailable) as raised:
            await store.get(uuid.uuid4())
        message = str(raised.value)
        assert "CertificateUntrusted" in message and front.url in message
        assert "does not verify against the system's CAs" in message
        assert "ca_bundle" in message and "AWS_CA_BUNDLE" in message
        assert front.connections == 1  # not retried: no retry can make it verify
        with pytest.raises(StoreUnavailable, match="CertificateUntrusted"):
            await store.init()  # what init-stores runs first
    assert store._http.quota.available == store._http.quota.capacity


async def test_another_cas_bundle_is_not_trusted_either(
    front: TlsFront,
    aws_env: dict[str, str],
    users_schema: Schema,
    table_name: str,
    tmp_path: Path,
) -> None:
    other = tmp_path / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    store = store_for(front, table_name, users_schema, aws_env, ca_bundle=str(other))
    async with store:
        with pytest.raises(StoreUnavailable, match=f"against the CA bundle '{other}'"):
            await store.get(uuid.uuid4())


async def test_a_ca_bundle_that_is_not_pem_fails_at_open(
    front: TlsFront,
    aws_env: dict[str, str],
    users_schema: Schema,
    table_name: str,
    tmp_path: Path,
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    store = store_for(front, table_name, users_schema, aws_env, ca_bundle=str(junk))
    with pytest.raises(StoreError, match="CABundleError: cannot load the CA bundle") as raised:
        await store.open()
    assert type(raised.value) is StoreError
    assert front.connections == 0
