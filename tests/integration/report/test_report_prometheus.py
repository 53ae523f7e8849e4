"""``report --prometheus URL``: the counters come from a real Prometheus (Debian's
``prometheus``, installed by scripts/services.sh) scraping a running proxy, through instant
queries of increases over the window. The queries are valid, grouped by the labels the report
needs, and add up to what the proxy counted after Prometheus first saw each series; an
unreachable Prometheus is said in the report."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.integration.report.conftest import config_for, load_json, run_report, running_instance
from tests.integration.report.test_report_cli import target, validate
from tests.support.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("report_env")]


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A Prometheus on a free loopback port; the test writes its scrape target into the
    config file and reloads it (``/-/reload``)."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: run scripts/services.sh (Debian's prometheus)")
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s"}}))
    port = free_port()
    proc = subprocess.Popen(
        [
            binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}", config
    finally:
        proc.terminate()
        proc.wait(timeout=20)


async def query(session: aiohttp.ClientSession, base: str, expr: str) -> list[Any]:
    async with session.get(f"{base}/api/v1/query", params={"query": expr}) as response:
        body = await response.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


async def scraped(session: aiohttp.ClientSession, base: str, expr: str, value: float) -> None:
    """Wait until ``expr`` (one series) is ``value`` in Prometheus."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            result = await query(session, base, expr)
        except (aiohttp.ClientError, AssertionError):
            result = []
        if result and float(result[0]["value"][1]) == value:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"Prometheus never saw {expr} == {value}")


async def test_counters_from_prometheus(tmp_path: Path, prometheus: tuple[str, Path]) -> None:
    base, config_file = prometheus
    sink = {"kind": "jsonl", "path": str(tmp_path / "m.jsonl")}
    async with running_instance(sink, users=8, orders=2) as instance, aiohttp.ClientSession() as s:
        admin = instance.proxy.admin_url.removeprefix("http://")
        config_file.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s"},
                    "scrape_configs": [
                        {"job_name": "shadowproxy", "static_configs": [{"targets": [admin]}]}
                    ],
                }
            )
        )
        deadline = time.monotonic() + 30
        while True:  # until it is up and takes the reload
            try:
                async with s.post(f"{base}/-/reload") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, "Prometheus did not start"
            await asyncio.sleep(0.2)
        users = 'sum(shadowproxy_comparisons_total{route="users-get"})'
        await scraped(s, base, users, instance.users)  # every series exists now
        before = instance.mismatches
        await instance.drive(users=16, orders=4)
        await scraped(s, base, users, instance.users)
        # The shadow's latency is observed beside the comparison, not with it: wait until a
        # scrape holds it too, or increase() over its buckets may still read zero.
        shadow = (
            "sum(shadowproxy_backend_request_duration_seconds_count"
            '{role="shadow",route="users-get"})'
        )
        await scraped(s, base, shadow, instance.users)
        config = config_for(tmp_path, instance.raw)
        out = tmp_path / "r.json"
        argv = ["-c", config, "--format", "json", "-o", str(out), "--since", "1h"]
        argv += ["--prometheus", base, "--admin-url", instance.proxy.admin_url]
        assert await asyncio.to_thread(run_report, *argv) == 0
        one = tmp_path / "one.json"
        argv = ["-c", config, "--format", "json", "-o", str(one), "--route", "orders-get"]
        assert await asyncio.to_thread(run_report, *argv, "--prometheus", base) == 0

    data = load_json(out)
    validate(data)
    assert data["sources"]["counters"]["kind"] == "prometheus"
    assert data["sources"]["counters"]["available"], data["sources"]["counters"]
    assert data["sources"]["readiness"]["available"]
    users_report = target(data, "users-get")
    added, mismatches = 16, instance.mismatches - before
    # increase() counts from the first sample Prometheus has of a series, extrapolated
    # towards the window's edges by at most half the sampled span (down to zero) plus about a
    # scrape interval: at least what came after, under three times that
    assert added <= users_report["comparisons"] <= 3 * added
    assert mismatches <= users_report["outcomes"]["mismatch"] <= 3 * mismatches
    assert users_report["mismatch_rate"]["rate"] == pytest.approx(mismatches / added, rel=0.1)
    fields = {f["field"]: f["counter"] for f in users_report["fields"]}
    assert mismatches <= fields["body.email"] <= 3 * mismatches
    sides = {lat["side"]: lat for lat in users_report["latency"]}
    assert set(sides) == {"primary", "shadow"} and sides["shadow"]["backends"] == ["modern"]
    assert sides["shadow"]["p99_seconds"] > 0
    assert users_report["readiness"][0]["decision"] == "flip_reads"
    only = load_json(one)
    validate(only)
    assert [t["name"] for t in only["targets"]] == ["orders-get"]
    assert 4 <= only["targets"][0]["outcomes"]["match"] <= 12


def test_an_unreachable_prometheus_is_said_in_the_report(tmp_path: Path) -> None:
    raw: dict[str, Any] = {
        "backends": {"a": {"kind": "http", "url": "http://127.0.0.1:9"}},
        "routes": [{"name": "r", "path": "/*", "primary": "a", "shadow": "a2"}],
    }
    raw["backends"]["a2"] = {"kind": "http", "url": "http://127.0.0.1:9"}
    raw["sink"] = {"kind": "jsonl", "path": str(tmp_path / "m.jsonl")}
    raw["admin"] = {"port": 1}
    out = tmp_path / "r.json"
    argv = ["-c", config_for(tmp_path, raw), "--format", "json", "-o", str(out)]
    assert run_report(*argv, "--prometheus", f"http://127.0.0.1:{free_port()}") == 0
    data = json.loads(out.read_text())
    validate(data)
    counters = data["sources"]["counters"]
    assert counters["kind"] == "prometheus" and not counters["available"]
    assert counters["error"].startswith("cannot query Prometheus: ")
    assert data["targets"][0]["outcomes"] is None
