"""The corpus round-trips, and refuses another redaction key, another version, or a file
that is not a corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from comparators import Redactor
from proxy.errors import ConfigError
from proxy.replay.corpus import case_line, read_corpus, write_corpus
from proxy.replay.model import Case, Request

REDACTOR = Redactor(frozenset({"email"}), key=b"k")
ANSWER = {"status": 200, "headers": [], "json": {"id": 1}}


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    case = Case(Request("http", "get", "GET", "/u/1", "GET", "web"), 2, ("a", "b"))
    other = Case(Request("store", "users", "GET", "/users/1", "get"))
    lines = [case_line(case, ANSWER), case_line(other, {"store": "pg", "value": None})]
    assert write_corpus(path, lines, REDACTOR) == 2
    with path.open("a") as f:
        f.write('{"kind": "http"}\n')
    cases, loaded = read_corpus(path, REDACTOR)
    assert [c.request for c in cases] == [case.request, other.request]
    assert cases[0].records == 2 and cases[0].answer == ANSWER
    assert loaded.malformed == 1
    only, _ = read_corpus(path, REDACTOR, "users")
    assert [c.request.target for c in only] == ["users"]


def test_refusals(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    write_corpus(path, [], REDACTOR)
    with pytest.raises(ConfigError, match="another redaction key"):
        read_corpus(path, Redactor(frozenset(), key=b"other"))
    path.write_text('{"shadowproxy_corpus": 2}\n')
    with pytest.raises(ConfigError, match="version 2"):
        read_corpus(path, REDACTOR)
    path.write_text('{"route": "r"}\n')
    with pytest.raises(ConfigError, match="not a shadowproxy corpus"):
        read_corpus(path, REDACTOR)
