"""backfill and verify as a user runs them: a real backfill process SIGKILLed mid-way and
resumed copies everything and at most one page twice; verify's exit codes and outputs; the
options it refuses."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.migrate.job import open_job
from proxy.resources.admin_ops import init_stores
from proxy.settings import load_settings
from tests.e2e.conftest import ROOT, run_cli, shadowproxy
from tests.integration.migrate.conftest import ENV, fill, raw_config

pytestmark = pytest.mark.e2e

PAGE = 500


@pytest.fixture
def config(tmp_path: Path, moto_url: str, prefix: str) -> Any:
    table = f"users_{uuid.uuid4().hex[:10]}"
    raw = raw_config(moto_url, table, prefix, tmp_path)
    path = tmp_path / "users.yaml"
    path.write_text(yaml.safe_dump(raw))
    settings = load_settings(path)
    asyncio.run(init_stores(settings, ENV))
    yield path
    asyncio.run(_drop(path, table))


async def _drop(path: Path, table: str) -> None:
    async with open_job(load_settings(path), "users", source=None, target=None, env=ENV) as job:
        async with job.source_store._connection() as conn:  # type: ignore[attr-defined]
            await conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        await job.target_store._client.call("DeleteTable", {"TableName": table})  # type: ignore[attr-defined]


async def _fill(path: Path, count: int) -> None:
    async with open_job(load_settings(path), "users", source=None, target=None, env=ENV) as job:
        await fill(job, count)


def _read(summary: str) -> int:
    match = re.search(r"segment 0/1: (\d+) read", summary)
    assert match, summary
    return int(match.group(1))


def test_a_killed_backfill_resumes_and_copies_at_most_one_page_again(
    config: Path, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    total = 6_000
    asyncio.run(_fill(config, total))
    checkpoints = tmp_path / "checkpoints"
    args = ["backfill", "-c", str(config), "--resource", "users", "--checkpoints",
            str(checkpoints), "--concurrency", "1", "--rate", "1500"]  # fmt: skip
    proc = subprocess.Popen(shadowproxy(*args), cwd=ROOT, env={**_env()}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    processes.append(proc)
    [checkpoint] = _wait_for_checkpoint(checkpoints, lambda s: s["counts"].get("read", 0) >= 1500)
    proc.send_signal(signal.SIGKILL)  # no handler runs: the page in flight is lost mid-way
    proc.wait(timeout=10)
    before = json.loads(checkpoint.read_text())["counts"]["read"]
    assert 0 < before < total

    again = run_cli(*args, "--resume", env=ENV, timeout=120)
    assert again.returncode == 0, again.stderr
    after = _read(again.stdout)
    assert total <= after <= total + PAGE, (before, after)  # one page copied twice at most

    clean = run_cli("verify", "-c", str(config), "--resource", "users", "--format", "json",
                    env=ENV, timeout=180)  # fmt: skip
    assert clean.returncode == 0, clean.stdout + clean.stderr
    result = json.loads(clean.stdout)
    assert result["clean"] and result["source_records"] == result["target_records"] == total

    done = run_cli(*args, "--resume", env=ENV)  # a finished segment: nothing to do
    assert done.returncode == 0 and "already done" in done.stdout, done.stdout

    refused = run_cli(*args, env=ENV)  # a checkpoint exists: say how to go on
    assert refused.returncode == 2 and "--resume" in refused.stderr, refused.stderr


def test_verify_exit_codes_output_and_repair(config: Path, tmp_path: Path) -> None:
    asyncio.run(_fill(config, 300))
    copied = run_cli("backfill", "-c", str(config), "--resource", "users", "--checkpoints",
                     str(tmp_path / "cp"), env=ENV)  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    asyncio.run(_plant(config))
    diffs = tmp_path / "diffs.jsonl"
    found = run_cli("verify", "-c", str(config), "--resource", "users", "--output", str(diffs),
                    "--recheck-delay", "0.05", env=ENV, timeout=120)  # fmt: skip
    assert found.returncode == 3, found.stdout + found.stderr
    assert "NOT CLEAN" in found.stdout and "differing: 1" in found.stdout
    lines = [json.loads(line) for line in diffs.read_text().splitlines()]
    assert [line["kind"] for line in lines] == ["differs"]
    fixed = run_cli("verify", "-c", str(config), "--resource", "users", "--keys", str(diffs),
                    "--repair", env=ENV, timeout=120)  # fmt: skip
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "repaired 1 keys" in fixed.stdout
    clean = run_cli("verify", "-c", str(config), "--resource", "users", env=ENV, timeout=120)
    assert clean.returncode == 0 and "CLEAN" in clean.stdout, clean.stdout


async def _plant(path: Path) -> None:
    async with open_job(load_settings(path), "users", source=None, target=None, env=ENV) as job:
        [first] = [r async for r in _first(job)]
        await job.target_store.put({**first, "last_name": "Planted"})


async def _first(job: Any) -> Any:
    async for page in job.source_store.scan_pages(0, 1):
        yield page.records[0]
        return


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--segment", "3/3"], "i must be in 0..N-1"),
        (["--segment", "x"], "expected i/N"),
        (["--rate", "0"], "above 0"),
        (["--concurrency", "0"], "at least 1"),
        (["--resume", "--restart"], "not allowed with"),
        (["--from", "dynamodb"], "copies from the primary"),
        (["--to", "cassandra"], "has stores"),
    ],
)
def test_bad_backfill_options_are_refused(config: Path, extra: list[str], message: str) -> None:
    result = run_cli("backfill", "-c", str(config), "--resource", "users", *extra, env=ENV)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr, result.stderr


def test_an_unknown_resource_is_a_config_error(config: Path) -> None:
    result = run_cli("verify", "-c", str(config), "--resource", "orders", env=ENV)
    assert result.returncode == 2 and "no such resource" in result.stderr, result.stderr


def _env() -> dict[str, str]:
    import os

    return {**os.environ, **ENV}


def _wait_for_checkpoint(directory: Path, ready: Any, timeout: float = 60) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [p for p in directory.glob("backfill-*.json")]
        for path in found:
            try:
                if ready(json.loads(path.read_text())):
                    return [path]
            except (json.JSONDecodeError, KeyError):
                pass
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint in {directory} within {timeout}s")


def test_a_clean_full_verify_is_saved_for_the_stop_old_writes_verdict(config: Path) -> None:
    asyncio.run(_fill(config, 50))
    before = asyncio.run(_clean_at(config))
    copied = run_cli("backfill", "-c", str(config), "--resource", "users", "--restart",
                     "--checkpoints", str(config.parent / "cp"), env=ENV)  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    for segment in ("0/2", "1/2"):
        done = run_cli("verify", "-c", str(config), "--resource", "users", "--segment",
                       segment, env=ENV)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    after = asyncio.run(_clean_at(config))
    assert before is None and after is not None and after <= time.time()


async def _clean_at(path: Path) -> float | None:
    from proxy.readiness.verify_results import open_verify_results

    results = open_verify_results(load_settings(path).readiness)
    try:
        return await results.clean_at("users")
    finally:
        await results.close()


def test_ctrl_c_stops_a_backfill_that_resume_then_finishes(
    config: Path, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    total = 3_000
    asyncio.run(_fill(config, total))
    checkpoints = tmp_path / "checkpoints"
    args = ["backfill", "-c", str(config), "--resource", "users", "--checkpoints",
            str(checkpoints), "--rate", "1000"]  # fmt: skip
    proc = subprocess.Popen(shadowproxy(*args), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    processes.append(proc)
    _wait_for_checkpoint(checkpoints, lambda s: s["counts"].get("read", 0) >= 500)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    assert b"--resume" in proc.stderr.read()  # type: ignore[union-attr]
    again = run_cli(*args, "--resume", env=ENV, timeout=120)
    assert again.returncode == 0, again.stderr
    assert total <= _read(again.stdout) <= total + 4 * PAGE  # --concurrency 4 pages at most
