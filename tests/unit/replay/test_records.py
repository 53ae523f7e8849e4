"""Records are read from the sink's files (rotated backups first), a JSON document or JSON
lines; the newest ``limit`` kept; malformed lines counted and shown by place, not content."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxy.errors import ConfigError
from proxy.replay.records import from_file, from_sink
from proxy.settings import settings_from_mapping


def record(i: int) -> dict[str, object]:
    return {"route": "r", "method": "GET", "path": f"/x/{i}", "request_id": str(i)}


def lines(*values: object) -> str:
    return "".join((v if isinstance(v, str) else json.dumps(v)) + "\n" for v in values)


def test_the_sink_with_its_backups_oldest_first_newest_kept(tmp_path: Path) -> None:
    sink = tmp_path / "m.jsonl"
    sink.with_name("m.jsonl.2").write_text(lines(record(0), record(1)))
    sink.with_name("m.jsonl.1").write_text(lines(record(2)))
    sink.write_text(lines(record(3), "{cut"))
    settings = settings_from_mapping({"sink": {"kind": "jsonl", "path": str(sink)}})
    loaded = from_sink(settings, keep=lambda r: True, limit=3)
    assert [r["path"] for r in loaded.records] == ["/x/1", "/x/2", "/x/3"]
    assert loaded.malformed == 1 and loaded.examples == ["m.jsonl line 2: not JSON"]


def test_no_sink_file_is_an_error(tmp_path: Path) -> None:
    settings = settings_from_mapping({"sink": {"kind": "jsonl", "path": str(tmp_path / "n")}})
    with pytest.raises(ConfigError, match=r"sink\.path = .*: no such file"):
        from_sink(settings, keep=lambda r: True, limit=10)


def test_documents_and_lines(tmp_path: Path) -> None:
    answer = tmp_path / "mismatches.json"
    answer.write_text(json.dumps({"count": 2, "mismatches": [record(1), record(2)]}, indent=2))
    assert len(from_file(answer, keep=lambda r: True, limit=10).records) == 2
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([record(1), ["no"]]))
    loaded = from_file(listed, keep=lambda r: True, limit=10)
    assert len(loaded.records) == 1 and loaded.examples == [
        "list.json item 2: not a JSON object but list"
    ]
    one = tmp_path / "one.jsonl"
    one.write_text(lines(record(5), {"route": "r", "path": "/p"}))
    loaded = from_file(one, keep=lambda r: r["path"] != "/x/6", limit=10)
    assert [r["path"] for r in loaded.records] == ["/x/5"]
    assert loaded.examples == ["one.jsonl line 2: not a mismatch record (no method)"]
    with pytest.raises(ConfigError, match="--records"):
        from_file(tmp_path / "absent", keep=lambda r: True, limit=1)
