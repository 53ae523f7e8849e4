"""A corpus keeps answers redacted, and a live answer made comparable the same way equals
the recorded one exactly when the values (hashed or not) are equal."""

from __future__ import annotations

from comparators import HttpSnapshot, Redactor
from proxy.replay.answers import comparable, http_answer, plain, snapshot_of

REDACTOR = Redactor(frozenset({"email", "x-api-key"}), key=b"k")
JSON = (("content-type", "application/json"),)


def test_json_bodies_are_redacted_and_compare_after_the_round_trip() -> None:
    live = HttpSnapshot(200, JSON, b'{"id": 1, "email": "a@b.c", "n": 1.50}')
    answer = http_answer(live, ("content-type",), REDACTOR)
    assert answer["json"]["email"].startswith("redacted:") and "a@b.c" not in str(answer)
    assert answer["headers"] == [["content-type", "application/json"]]
    assert comparable(live, ("content-type",), REDACTOR) == snapshot_of(answer)


def test_other_bodies_are_a_preview_and_never_kept_headers_are_dropped() -> None:
    headers = (("content-type", "text/html"), ("set-cookie", "s=1"), ("x-api-key", "k1"))
    live = HttpSnapshot(200, headers, b"<html>secret page</html>")
    answer = http_answer(live, ("content-type", "set-cookie", "x-api-key"), REDACTOR)
    assert answer["preview"].startswith("24 bytes html redacted:")
    assert [name for name, _ in answer["headers"]] == ["content-type", "x-api-key"]
    assert answer["headers"][1][1].startswith("redacted:")
    assert "secret" not in str(answer)


def test_plain_values_are_json() -> None:
    value = plain({"email": "a@b.c", "items": [{"email": "d@e.f", "n": 1}]}, REDACTOR)
    assert value["items"][0]["n"] == 1
    assert "a@b.c" not in str(value) and "d@e.f" not in str(value)
