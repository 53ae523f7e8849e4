"""Session-wide real services for integration tests: one DynamoDB endpoint (moto's server on
a free loopback port) shared by every test; PostgreSQL and Redis run on this machine."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from proxy.store.embedded import start_moto_server

PG_DSN = os.environ.get("SHADOWPROXY_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SHADOWPROXY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    server, endpoint_url = start_moto_server()
    yield endpoint_url
    server.stop()
