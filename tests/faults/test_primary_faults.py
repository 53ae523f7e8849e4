"""Scenario c: the primary down, broken or slow. The client is answered at all, before its own
(generous) timeout, with 502 or 504 in the proxy's JSON error envelope carrying its request
id; never a hang, never a dropped connection. No speed is asserted."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import pytest

from tests.faults.client import error_envelope, fetch, request_id
from tests.faults.relay import Mode
from tests.faults.targets import HttpTarget

pytestmark = pytest.mark.needs("primary")

CLIENTS = 8


@pytest.fixture
def restore_primary(http_target: HttpTarget) -> Iterator[None]:
    yield
    assert http_target.primary is not None
    http_target.primary.set(Mode.PASS)


@pytest.mark.parametrize(
    ("fault", "mode", "status"),
    [
        ("down", Mode.DOWN, 502),  # connection refused
        ("cut", Mode.CUT, 502),  # accepted, then closed before any byte
        ("reset", Mode.RESET, 502),  # the request read, then RST
        ("garbage", Mode.GARBAGE, 502),  # an answer that is not HTTP
        ("hang", Mode.HANG, 504),  # the request read, no answer ever
        ("slow", Mode.DELAY, 504),  # the answer comes after the client's own timeout
    ],
)
async def test_primary_fault_is_a_502_or_504_envelope(
    fault: str,
    mode: Mode,
    status: int,
    http_target: HttpTarget,
    http: aiohttp.ClientSession,
    pytestconfig: pytest.Config,
    restore_primary: None,
) -> None:
    assert http_target.primary is not None
    client_timeout = pytestconfig.getoption("client_timeout")
    await asyncio.to_thread(http_target.primary.set, mode, delay=client_timeout)
    path = http_target.paths[0]

    async def one() -> None:
        rid = request_id()
        try:
            answer, echoed = await fetch(http, "GET", http_target.proxy_url + path, request_id=rid)
        except TimeoutError:
            raise AssertionError(
                f"primary {fault}: no answer within the client's {client_timeout:g}s"
            ) from None
        assert answer.status == status, f"primary {fault}: {answer.describe()}"
        error = error_envelope(answer.body)
        assert error["request_id"] == rid, error
        assert echoed == rid
        assert ("content-type", "application/json") in answer.headers or any(
            name == "content-type" and value.startswith("application/json")
            for name, value in answer.headers
        ), answer.headers

    await asyncio.gather(*(one() for _ in range(CLIENTS)))
