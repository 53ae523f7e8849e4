"""The admin API's flag change when the flag store fails: a 503 (or 409) in the JSON envelope
saying nothing was changed, never a plain-text 500."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from proxy.control.admin import require_token
from proxy.control.flags_api import FlagsAdmin
from proxy.flags.store import FlagConflict, FlagStoreUnavailable


class FailingStore:
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def set(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error


class NoDecisions:
    async def check_flip(self, *args: Any) -> None:
        return None


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (FlagStoreUnavailable("Redis unreachable"), 503, "unavailable"),
        (FlagConflict("the flags kept changing"), 409, "conflict"),
    ],
)
async def test_a_failing_flag_store_is_an_envelope_not_a_500(
    error: Exception, status: int, code: str
) -> None:
    admin = FlagsAdmin(FailingStore(error), NoDecisions(), writable=None)  # type: ignore[arg-type]
    app = web.Application()
    app.router.add_put("/flags/{name}", require_token("t", admin.set))
    async with TestClient(TestServer(app)) as client:
        response = await client.put(
            "/flags/users.read_from",
            json={"value": "dynamodb", "reason": "green"},
            headers={"Authorization": "Bearer t"},
        )
        body = await response.json()
    assert response.status == status
    assert body["error"]["code"] == code
    assert str(error) in body["error"]["message"]
