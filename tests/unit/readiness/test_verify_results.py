"""Verify results in a JSON file (``readiness.store: memory``): what ``clean_at`` answers for
whole-table and segmented runs, atomic saves, and clear errors for a bad file."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from proxy.errors import ConfigError
from proxy.readiness import ReadinessConfig
from proxy.readiness.verify_results import (
    FileVerifyResults,
    RedisVerifyResults,
    VerifyResult,
    VerifyResultsError,
    clean_since,
    explain,
    latest,
    open_verify_results,
)
from proxy.settings import settings_from_mapping

T0 = 1_700_000_000.0


def result(segment: int = 0, total: int = 1, *, at: float = T0, **counts: int) -> VerifyResult:
    return VerifyResult(
        resource="users",
        source="postgres",
        target="dynamodb",
        segment=segment,
        total_segments=total,
        started_at=at,
        finished_at=at + 30,
        source_records=counts.pop("source_records", 100),
        target_records=counts.pop("target_records", 100),
        missing=counts.pop("missing", 0),
        extra=counts.pop("extra", 0),
        differing=counts.pop("differing", 0),
    )


@pytest.fixture
def results(tmp_path: Path) -> FileVerifyResults:
    return FileVerifyResults(tmp_path / "state" / "verify-results.json")


def test_a_result_round_trips_and_knows_whether_it_is_clean() -> None:
    clean = result()
    assert clean.clean and clean.field == "1/0"
    assert VerifyResult.from_dict(json.loads(json.dumps(clean.to_dict()))) == clean
    assert not result(differing=1).clean
    assert not result(missing=1).clean and not result(extra=1).clean


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"segment": 2, "total_segments": 2}, "need 0 <= segment < total_segments"),
        ({"total_segments": 0}, "need 0 <= segment < total_segments"),
        ({"missing": -1}, "missing is negative"),
        ({"finished_at": T0 - 1}, "is before started_at"),
        ({"resource": ""}, "resource is empty"),
    ],
)
def test_an_impossible_result_is_refused(changes: dict[str, Any], says: str) -> None:
    with pytest.raises(VerifyResultsError, match=says):
        dataclasses.replace(result(), **changes)


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"missing": None}, "'missing' must be an integer"),
        ({"segment": True}, "'segment' must be an integer"),
        ({"started_at": "yesterday"}, "'started_at' must be a number"),
        ({"target": 7}, "'target' must be a string"),
    ],
)
def test_from_dict_names_the_bad_field(changes: dict[str, Any], says: str) -> None:
    with pytest.raises(VerifyResultsError, match=says):
        VerifyResult.from_dict({**result().to_dict(), **changes})
    with pytest.raises(VerifyResultsError, match="lacks 'differing'"):
        VerifyResult.from_dict({k: v for k, v in result().to_dict().items() if k != "differing"})


async def test_nothing_saved_means_no_clean_verify(results: FileVerifyResults) -> None:
    assert await results.last("users") == []
    assert await results.clean_at("users") is None
    assert explain([]) == "no full-table verify has been saved: run shadowproxy verify"


async def test_a_clean_whole_table_verify_is_clean_as_of_its_start(
    results: FileVerifyResults,
) -> None:
    await results.save(result(at=T0))
    assert await results.clean_at("users") == T0  # started_at, not finished_at
    assert await results.clean_at("orders") is None
    await results.save(result(at=T0 + 100, differing=2))  # a re-run replaces the result
    assert await results.clean_at("users") is None
    assert [r.differing for r in await results.last("users")] == [2]
    why = explain(await results.last("users"))
    assert "found differences" in why and "2 differing" in why


async def test_segments_count_only_when_every_one_is_saved_and_clean(
    results: FileVerifyResults,
) -> None:
    await results.save(result(0, 3, at=T0 + 10))
    await results.save(result(2, 3, at=T0 + 5))
    assert await results.clean_at("users") is None
    assert "no result for segment 1" in explain(await results.last("users"))
    await results.save(result(1, 3, at=T0 + 20))
    assert await results.clean_at("users") == T0 + 5  # the oldest segment's start
    assert [r.segment for r in await results.last("users")] == [0, 1, 2]
    await results.save(result(1, 3, at=T0 + 40, missing=1))
    assert await results.clean_at("users") is None


async def test_the_split_used_last_decides(results: FileVerifyResults) -> None:
    for segment in range(4):
        await results.save(result(segment, 4, at=T0))
    assert await results.clean_at("users") == T0
    await results.save(result(0, 2, at=T0 + 500))  # a new run split in two: half of it done
    assert await results.clean_at("users") is None
    assert [(r.segment, r.total_segments) for r in await results.last("users")] == [(0, 2)]
    await results.save(result(1, 2, at=T0 + 600))
    assert await results.clean_at("users") == T0 + 500


def test_latest_and_clean_since_are_pure() -> None:
    rows = [result(0, 2, at=T0), result(1, 2, at=T0 + 1), result(0, 1, at=T0 - 100)]
    assert [r.total_segments for r in latest(rows)] == [2, 2]
    assert clean_since(latest(rows)) == T0


async def test_saves_are_atomic_and_none_is_lost_to_a_concurrent_save(
    results: FileVerifyResults,
) -> None:
    await asyncio.gather(*(results.save(result(i, 16, at=T0 + i)) for i in range(16)))
    assert [r.segment for r in await results.last("users")] == list(range(16))
    assert await results.clean_at("users") == T0
    doc = json.loads(results.path.read_text())
    assert doc["format"] == 1 and sorted(doc["results"]["users"]) == sorted(
        f"16/{i}" for i in range(16)
    )
    leftovers = [p.name for p in results.path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"{not json", "is not valid"),
        (b"[]", 'expected an object with a "results" object'),
        (b'{"format": 9, "results": {}}', "unknown format 9"),
        (b'{"format": 1, "results": {"users": {"1/0": {"resource": "users"}}}}', "lacks"),
        (b'{"format": 1, "results": {"users": []}}', "results of 'users' must be an object"),
    ],
)
async def test_a_corrupt_file_is_a_clear_error(
    results: FileVerifyResults, content: bytes, says: str
) -> None:
    results.path.parent.mkdir(parents=True)
    results.path.write_bytes(content)
    with pytest.raises(VerifyResultsError, match=says) as raised:
        await results.clean_at("users")
    assert str(results.path.absolute()) in str(raised.value)
    assert "fix or remove it" in str(raised.value)
    with pytest.raises(VerifyResultsError):  # and a save does not overwrite it blindly
        await results.save(result())
    assert results.path.read_bytes() == content


async def test_a_result_filed_under_the_wrong_segment_is_refused(
    results: FileVerifyResults,
) -> None:
    results.path.parent.mkdir(parents=True)
    doc = {"format": 1, "results": {"users": {"2/1": result().to_dict()}}}
    results.path.write_text(json.dumps(doc))
    with pytest.raises(VerifyResultsError, match="holds the result of users 1/0"):
        await results.last("users")


async def test_an_unreadable_file_is_a_clear_error(results: FileVerifyResults) -> None:
    results.path.mkdir(parents=True)  # a directory where the file should be
    with pytest.raises(VerifyResultsError, match="cannot read verify results"):
        await results.clean_at("users")
    with pytest.raises(VerifyResultsError, match="cannot read verify results"):
        await results.save(result())


def test_where_the_results_are_kept(tmp_path: Path) -> None:
    default = open_verify_results(ReadinessConfig())
    assert isinstance(default, FileVerifyResults)
    assert default.path == Path(".shadowproxy/verify-results.json")
    assert not default.path.is_absolute()  # relative to the current directory
    in_state = open_verify_results(ReadinessConfig(), state_dir=tmp_path)
    assert isinstance(in_state, FileVerifyResults)
    assert in_state.path == tmp_path / "verify-results.json"
    chosen = tmp_path / "v.json"
    configured = ReadinessConfig(verify_results_path=str(chosen))
    configured_store = open_verify_results(configured, state_dir=Path("ignored"))
    assert isinstance(configured_store, FileVerifyResults) and configured_store.path == chosen
    assert isinstance(open_verify_results(ReadinessConfig(store="redis")), RedisVerifyResults)


async def test_a_process_reads_what_another_saved(tmp_path: Path) -> None:
    path = tmp_path / "shared.json"
    writer, reader = FileVerifyResults(path), FileVerifyResults(path)
    await writer.save(result())
    assert await reader.clean_at("users") == T0
    assert os.stat(path).st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("verify_max_age_seconds", 0, "readiness.verify_max_age_seconds = 0: Input should be"),
        ("verify_results_path", "", "readiness.verify_results_path = ''"),
    ],
)
def test_bad_keys_are_config_errors_naming_key_and_value(key: str, value: Any, says: str) -> None:
    raw = {"routes": [], "readiness": {key: value}}
    with pytest.raises(ConfigError, match=re.escape(says)):
        settings_from_mapping(raw)
