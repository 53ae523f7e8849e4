from __future__ import annotations

import base64
import uuid

import pytest

from proxy.store import cursor
from proxy.store.base import InvalidCursor
from proxy.store.schema import Schema


def test_round_trip(schema: Schema) -> None:
    key = uuid.uuid4()
    token = cursor.encode("postgres", schema, key)
    assert "=" not in token
    assert cursor.decode("postgres", schema, token) == key


@pytest.mark.parametrize(
    "token",
    [
        "",
        "!!!",
        base64.urlsafe_b64encode(b"[1]").decode(),
        base64.urlsafe_b64encode(b'{"s":"postgres","k":"not-a-uuid"}').decode(),
        "é",
    ],
)
def test_garbage_is_refused(schema: Schema, token: str) -> None:
    with pytest.raises(InvalidCursor):
        cursor.decode("postgres", schema, token)


def test_a_cursor_only_resumes_the_store_that_issued_it(schema: Schema) -> None:
    token = cursor.encode("dynamodb", schema, uuid.uuid4())
    with pytest.raises(InvalidCursor, match="not issued by this postgres store"):
        cursor.decode("postgres", schema, token)
