"""The noise baseline end to end: a primary and its twin that stamp every answer with a
random request id and a timestamp, a shadow that matches except those (and, for one user, a
real difference). Differences only in the learned noise are outcome ``noise``; a real one
is still a ``mismatch``; readiness's mismatch rate counts only the real ones."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.integration.http.conftest import UpstreamFactory
from tests.support.servers import RunningProxy, free_port, start_proxy

pytestmark = pytest.mark.integration

TOKEN = "n0ise-t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
C = "shadowproxy_comparisons_total"
N = "shadowproxy_noise_comparisons_total"
MIN_SAMPLES = 5


def stamped(name_of: dict[str, str]) -> Any:
    """A users service whose every answer carries a fresh request id and timestamp."""

    async def handler(request: web.Request) -> web.Response:
        key = request.path.rsplit("/", 1)[-1]
        return web.json_response(
            {
                "id": key,
                "name": name_of.get(key, "Ada"),
                "request_id": str(uuid.uuid4()),
                "served_at": time.time_ns(),
            }
        )

    return handler


async def noise_proxy(
    tmp_path: Any, primary: str, shadow: str, twin: str, **noise: Any
) -> RunningProxy:
    raw = {
        "backends": {
            "primary": {"kind": "http", "url": primary, "timeout_seconds": 5},
            "shadow": {"kind": "http", "url": shadow, "timeout_seconds": 2},
            "twin": {"kind": "http", "url": twin, "timeout_seconds": 2},
        },
        "routes": [
            {
                "name": "r",
                "path": "/users/{id}",
                "primary": "primary",
                "shadow": "shadow",
                "noise": {"backend": "twin", "sample": 1.0, "min_samples": MIN_SAMPLES, **noise},
            }
        ],
        "sink": {"kind": "jsonl", "path": str(tmp_path / "mismatches.jsonl")},
        "readiness": {"flush_interval_seconds": 0.05, "min_comparisons": 1},
    }
    return await start_proxy(raw, env={"SHADOWPROXY_ADMIN_TOKEN": TOKEN})


def outcomes(proxy: RunningProxy) -> dict[str, float]:
    names = ("match", "mismatch", "noise", "shadow_error", "timeout", "dropped", "skipped")
    return {n: v for n in names if (v := proxy.value(C, route="r", operation="GET", outcome=n))}


async def get_one(
    client: aiohttp.ClientSession, proxy: RunningProxy, key: str, compared: float
) -> dict[str, Any]:
    """One request, waited for until its comparison is published (so learning is ordered)."""
    async with client.get(f"{proxy.url}/users/{key}") as r:
        assert r.status == 200
        body: dict[str, Any] = json.loads(await r.read())
    await proxy.wait_for(lambda: sum(outcomes(proxy).values()) >= compared)
    return body


async def admin(
    client: aiohttp.ClientSession, proxy: RunningProxy, method: str, path: str
) -> tuple[int, Any]:
    async with client.request(method, proxy.admin_url + path, headers=AUTH) as r:
        return r.status, await r.json()


async def readiness_stats(client: aiohttp.ClientSession, proxy: RunningProxy, n: int) -> Any:
    for _ in range(200):
        status, body = await admin(client, proxy, "GET", "/readiness?target=r")
        assert status == 200
        stats = body["verdicts"][0]["stats"]
        if stats["comparisons"] >= n:
            return stats
        await asyncio.sleep(0.05)
    raise AssertionError(f"readiness never saw {n} comparisons: {stats}")


async def test_differences_only_in_learned_noise_are_noise_and_a_real_one_is_a_mismatch(
    upstream_factory: UpstreamFactory, client: aiohttp.ClientSession, tmp_path: Any
) -> None:
    primary = await upstream_factory(stamped({}))
    twin = await upstream_factory(stamped({}))
    shadow = await upstream_factory(stamped({"bad": "Bob"}))
    proxy = await noise_proxy(tmp_path, primary.url, shadow.url, twin.url)
    try:
        for i in range(10):
            body = await get_one(client, proxy, "1", i + 1)
            assert body["name"] == "Ada"  # the client always gets the primary's answer
        # Nothing is noisy before min_samples noise comparisons; from then on, noise.
        assert outcomes(proxy) == {"mismatch": MIN_SAMPLES - 1, "noise": 10 - MIN_SAMPLES + 1}
        assert proxy.value(N, route="r", result="mismatch") == 10
        assert len(twin.seen) == 10
        assert proxy.value("shadowproxy_mismatch_fields_total", route="r", field="body.name") == 0

        # A real difference on the same route, next to the noisy fields: never hidden.
        await get_one(client, proxy, "bad", 11)
        assert outcomes(proxy)["mismatch"] == MIN_SAMPLES
        assert proxy.value("shadowproxy_mismatch_fields_total", route="r", field="body.name") == 1

        status, listing = await admin(client, proxy, "GET", "/mismatches?limit=20")
        assert status == 200
        newest = listing["mismatches"][0]
        assert newest["outcome"] == "mismatch" and newest["path"] == "/users/bad"
        assert sorted(newest["noise_fields"]) == ["body.request_id", "body.served_at"]
        assert {d["path"] for d in newest["differences"]} >= {"body.name", "body.request_id"}
        noise_records = [m for m in listing["mismatches"] if m["outcome"] == "noise"]
        assert len(noise_records) == 10 - MIN_SAMPLES + 1
        assert sorted(noise_records[0]["noise_fields"]) == ["body.request_id", "body.served_at"]
        async with client.get(proxy.admin_url + "/", headers=AUTH) as r:  # the triage page
            html = await r.text()
        assert html.count('">noise</span>') == len(noise_records)  # marked; the mismatch not
        assert html.count('class="muted noise-fields"') == len(noise_records)

        status, learned = await admin(client, proxy, "GET", "/noise")
        assert status == 200 and learned["per_process"] is True
        route = learned["routes"]["r"]
        assert route["learning"] is False and route["backend"] == "twin"
        assert route["noise_comparisons"] == 11 and route["shadow_comparisons"] == 11
        assert sorted(route["noisy_fields"]) == ["body.request_id", "body.served_at"]
        rates = {f["field"]: f for f in route["fields"]}
        assert rates["body.request_id"]["noise_rate"] == 1.0
        assert rates["body.name"]["noisy"] is False
        assert rates["body.name"]["noise_rate"] == 0.0
        assert rates["body.name"]["shadow_rate"] == pytest.approx(1 / 11, abs=1e-6)

        # Readiness: noise is compared, not mismatched.
        stats = await readiness_stats(client, proxy, 11)
        assert stats["comparisons"] == 11
        assert stats["mismatch"] == MIN_SAMPLES and stats["noise"] == 10 - MIN_SAMPLES + 1
        assert stats["mismatch_rate"] == pytest.approx(MIN_SAMPLES / 11)
    finally:
        await proxy.stop()


async def test_reset_forgets_and_the_endpoints_are_guarded(
    upstream_factory: UpstreamFactory, client: aiohttp.ClientSession, tmp_path: Any
) -> None:
    primary = await upstream_factory(stamped({}))
    twin = await upstream_factory(stamped({}))
    shadow = await upstream_factory(stamped({}))
    proxy = await noise_proxy(tmp_path, primary.url, shadow.url, twin.url)
    try:
        for i in range(MIN_SAMPLES + 2):
            await get_one(client, proxy, "1", i + 1)
        assert outcomes(proxy)["noise"] == 3
        async with client.get(proxy.admin_url + "/noise") as r:
            assert r.status == 401
        async with client.delete(proxy.admin_url + "/noise") as r:
            assert r.status == 401
        status, body = await admin(client, proxy, "DELETE", "/noise?route=nope")
        assert status == 404 and "nope" in body["error"]["message"]

        status, body = await admin(client, proxy, "DELETE", "/noise?route=r")
        assert (status, body) == (200, {"reset": ["r"]})
        _, learned = await admin(client, proxy, "GET", "/noise?route=r")
        route = learned["routes"]["r"]
        assert route["learning"] is True and route["noise_comparisons"] == 0
        assert route["fields"] == [] and route["noisy_fields"] == []

        # Learning starts over: the next comparisons are mismatches again until min_samples.
        await get_one(client, proxy, "1", MIN_SAMPLES + 3)
        assert outcomes(proxy) == {"mismatch": MIN_SAMPLES, "noise": 3}
        status, body = await admin(client, proxy, "DELETE", "/noise")
        assert (status, body) == (200, {"reset": ["r"]})
    finally:
        await proxy.stop()


async def test_a_noise_backend_that_is_down_costs_nothing_but_the_learning(
    upstream_factory: UpstreamFactory, client: aiohttp.ClientSession, tmp_path: Any
) -> None:
    primary = await upstream_factory(stamped({}))
    shadow = await upstream_factory(stamped({}))
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proxy = await noise_proxy(tmp_path, primary.url, shadow.url, nowhere)
    try:
        for i in range(MIN_SAMPLES + 3):
            body = await get_one(client, proxy, "1", i + 1)
            assert body["name"] == "Ada"
        # Shadow comparisons go on; with nothing learned the random fields are mismatches.
        assert outcomes(proxy) == {"mismatch": MIN_SAMPLES + 3}
        assert proxy.value(N, route="r", result="error") == MIN_SAMPLES + 3
        errors = proxy.value(
            "shadowproxy_backend_errors_total", backend="twin", role="noise", kind="connect"
        )
        assert errors == MIN_SAMPLES + 3
        _, learned = await admin(client, proxy, "GET", "/noise")
        route = learned["routes"]["r"]
        assert route["noise_comparisons"] == 0 and route["learning"] is True
        assert route["shadow_comparisons"] == MIN_SAMPLES + 3
        assert route["noisy_fields"] == []
        assert proxy.value("shadowproxy_internal_errors_total", operation="noise") == 0
    finally:
        await proxy.stop()


async def test_without_a_noise_backend_there_is_no_noise_outcome(
    upstream_factory: UpstreamFactory, client: aiohttp.ClientSession, tmp_path: Any
) -> None:
    primary = await upstream_factory(stamped({}))
    shadow = await upstream_factory(stamped({}))
    raw = {
        "backends": {
            "primary": {"kind": "http", "url": primary.url},
            "shadow": {"kind": "http", "url": shadow.url},
        },
        "routes": [{"name": "r", "path": "/users/{id}", "primary": "primary", "shadow": "shadow"}],
        "sink": {"kind": "jsonl", "path": str(tmp_path / "m.jsonl")},
    }
    proxy = await start_proxy(raw, env={"SHADOWPROXY_ADMIN_TOKEN": TOKEN})
    try:
        for i in range(3):
            await get_one(client, proxy, "1", i + 1)
        assert outcomes(proxy) == {"mismatch": 3}
        status, learned = await admin(client, proxy, "GET", "/noise")
        assert (status, learned) == (200, {"per_process": True, "routes": {}})
    finally:
        await proxy.stop()


async def test_the_report_counts_noise_apart_and_lists_what_was_learned(
    upstream_factory: UpstreamFactory,
    client: aiohttp.ClientSession,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import jsonschema

    from proxy.report import render_html, render_json, render_md
    from proxy.report.build import Options, build

    monkeypatch.setenv("SHADOWPROXY_ADMIN_TOKEN", TOKEN)
    primary = await upstream_factory(stamped({}))
    twin = await upstream_factory(stamped({}))
    shadow = await upstream_factory(stamped({"bad": "Bob"}))
    proxy = await noise_proxy(tmp_path, primary.url, shadow.url, twin.url)
    try:
        for i in range(MIN_SAMPLES + 2):
            await get_one(client, proxy, "1", i + 1)
        await get_one(client, proxy, "bad", MIN_SAMPLES + 3)
        sink = tmp_path / "mismatches.jsonl"
        # every record, noise ones too, is in the sink (which batches them a moment) first
        await proxy.wait_for(
            lambda: sink.exists() and len(sink.read_bytes().splitlines()) >= MIN_SAMPLES + 3,
            timeout=15,
        )
        options = Options(config="noise.yaml", since="1h", admin_url=proxy.admin_url)
        report = await asyncio.to_thread(build, proxy.settings, options)
    finally:
        await proxy.stop()
    (target,) = report.targets
    assert target.outcomes is not None
    assert target.outcomes["noise"] == 3 and target.outcomes["mismatch"] == MIN_SAMPLES
    assert target.rate is not None and target.rate.comparisons == MIN_SAMPLES + 3
    assert (target.records, target.noise_records) == (MIN_SAMPLES, 3)
    assert target.noise is not None and not target.noise.learning
    noisy = sorted(f.field for f in target.noise.fields if f.noisy)
    assert noisy == ["body.request_id", "body.served_at"]
    assert target.examples  # real mismatches only, never a record of outcome noise
    assert not any(e.detail.startswith("differs only in learned noise") for e in target.examples)
    doc = json.loads(render_json.render(report))
    schema = json.loads((Path(__file__).parents[3] / "docs" / "report.schema.json").read_text())
    jsonschema.validate(doc, schema)
    assert doc["targets"][0]["noise"]["records"] == 3
    markdown = render_md.render(report)
    assert "### Learned noise" in markdown and "`body.request_id` | **noise**" in markdown
    assert "body.request_id" in render_html.render(report)
