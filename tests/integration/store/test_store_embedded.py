from __future__ import annotations

import socket
from urllib.parse import urlsplit

import aiohttp
import pytest

from proxy.store.embedded import start_moto_server

pytestmark = pytest.mark.integration

LIST_TABLES = {
    "X-Amz-Target": "DynamoDB_20120810.ListTables",
    "Content-Type": "application/x-amz-json-1.0",
    "Authorization": (
        "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/dynamodb/aws4_request, "
        "SignedHeaders=host, Signature=0"
    ),
}


async def test_servers_get_free_ports_answer_and_stop_cleanly() -> None:
    first, first_url = start_moto_server()
    second, second_url = start_moto_server()
    try:
        assert first_url != second_url
        assert urlsplit(first_url).hostname == "127.0.0.1"
        async with (
            aiohttp.ClientSession() as session,
            session.post(first_url, data=b"{}", headers=LIST_TABLES) as response,
        ):
            assert response.status == 200
            assert "TableNames" in await response.json(content_type=None)
            assert len(response.headers.getall("Server")) == 1
    finally:
        first.stop()
        second.stop()
    port = urlsplit(first_url).port
    assert port is not None
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", port))
