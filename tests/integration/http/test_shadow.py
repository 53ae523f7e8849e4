"""The shadow path: same request, right outcomes, never on the client's path."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.integration.http.conftest import ProxyFactory, UpstreamFactory
from tests.support.servers import RunningProxy

pytestmark = pytest.mark.integration

C = "shadowproxy_comparisons_total"


def outcomes(proxy: RunningProxy, route: str = "r") -> dict[str, float]:
    names = ["match", "mismatch", "shadow_error", "timeout", "dropped", "skipped", "primary_error"]
    found: dict[str, float] = {}
    for op in ("GET", "POST", "HEAD"):
        for n in names:
            if v := proxy.value(C, route=route, operation=op, outcome=n):
                found[n] = found.get(n, 0) + v
    return found


def total(proxy: RunningProxy, route: str = "r") -> float:
    return sum(outcomes(proxy, route).values())


def user_handler(users: dict[str, dict[str, Any]]) -> Any:
    async def handler(request: web.Request) -> web.Response:
        key = request.path.rsplit("/", 1)[-1]
        if key not in users:
            return web.json_response({"error": "nope"}, status=404)
        return web.json_response(users[key])

    return handler


async def test_shadow_gets_the_same_request(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    primary = await upstream_factory()
    shadow = await upstream_factory()
    proxy = await proxy_factory(primary, shadow)
    async with client.get(proxy.url + "/users/1?full=1", headers={"X-Requester-ID": "web"}) as r:
        assert r.status == 200
    await proxy.wait_for(lambda: total(proxy) == 1)
    p, s = primary.seen[0], shadow.seen[0]
    assert (s.method, s.path_qs, s.body) == (p.method, p.path_qs, p.body)

    def without_host(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return sorted(h for h in headers if h[0].lower() != "host")  # each backend's own

    assert without_host(s.headers) == without_host(p.headers)
    assert outcomes(proxy) == {"match": 1}


async def test_scripted_mix_gives_exact_outcome_counts(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    legacy = {str(i): {"id": i, "email": f"u{i}@x.io", "age": 30 + i} for i in range(10)}
    candidate = {k: dict(v) for k, v in legacy.items()}
    candidate["3"]["email"] = "other@x.io"
    candidate["5"]["age"] = "35"
    del candidate["7"]
    proxy = await proxy_factory(
        await upstream_factory(user_handler(legacy)),
        await upstream_factory(user_handler(candidate)),
    )
    for i in range(10):
        async with client.get(f"{proxy.url}/users/{i}") as r:
            assert r.status == 200
            assert json.loads(await r.read()) == legacy[str(i)]
    await proxy.wait_for(lambda: total(proxy) == 10)
    assert outcomes(proxy) == {"match": 7, "mismatch": 3}
    fields = "shadowproxy_mismatch_fields_total"
    # user 7 is missing in the candidate: a 404 whose body differs everywhere
    assert proxy.value(fields, route="r", field="status") == 1
    assert proxy.value(fields, route="r", field="body.error") == 1
    assert proxy.value(fields, route="r", field="body.email") == 2
    assert proxy.value(fields, route="r", field="body.age") == 2


async def test_mismatch_record_is_redacted_and_listed(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    legacy = {"1": {"id": 1, "email": "ada@example.com"}}
    candidate = {"1": {"id": 1, "email": "ada@example.org"}}
    proxy = await proxy_factory(
        await upstream_factory(user_handler(legacy)),
        await upstream_factory(user_handler(candidate)),
        env={"SHADOWPROXY_ADMIN_TOKEN": "s3cret", "SHADOWPROXY_REDACTION_KEY": "k"},
        redaction={"fields": ["email"]},
    )
    async with client.get(f"{proxy.url}/users/1?email=ada@example.com") as r:
        rid = r.headers["X-Request-ID"]
    await proxy.wait_for(lambda: total(proxy) == 1)
    async with client.get(
        proxy.admin_url + "/mismatches?limit=5", headers={"Authorization": "Bearer s3cret"}
    ) as r:
        assert r.status == 200
        listing = await r.json()
    text = json.dumps(listing)
    assert "ada@example" not in text
    record = listing["mismatches"][0]
    assert record["request_id"] == rid
    assert record["route"] == "r" and record["primary_status"] == 200
    diff = record["differences"][0]
    assert diff["path"] == "body.email" and diff["primary"] != diff["shadow"]
    assert diff["primary"].startswith("redacted:")


async def test_ignore_rules_turn_noise_into_matches(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    counter = {"n": 0}

    async def noisy(request: web.Request) -> web.Response:
        counter["n"] += 1
        return web.json_response(
            {"id": 1, "served_at": counter["n"], "items": [{"v": 1, "ts": counter["n"]}]}
        )

    proxy = await proxy_factory(
        await upstream_factory(noisy),
        await upstream_factory(noisy),
        route={"compare": {"ignore": ["served_at", "items[*].ts"]}},
    )
    for _ in range(5):
        async with client.get(proxy.url + "/x") as r:
            await r.read()
    await proxy.wait_for(lambda: total(proxy) == 5)
    assert outcomes(proxy) == {"match": 5}


async def test_only_the_configured_headers_are_compared(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    """``compare.headers`` names what of the answers' headers is compared: a difference there
    is a mismatch naming the header, one in any other header is not looked at."""

    def answering(version: str, other: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            headers = {"X-Version": version, "X-Other": other}
            if request.path == "/same":
                headers["X-Version"] = "1"
            return web.json_response({"id": 1}, headers=headers)

        return handler

    proxy = await proxy_factory(
        await upstream_factory(answering("1", "a")),
        await upstream_factory(answering("2", "b")),
        route={"compare": {"headers": ["X-Version"]}},
    )
    for path in ("/same", "/differs"):
        async with client.get(proxy.url + path) as r:
            assert r.headers["X-Version"] == "1" and r.headers["X-Other"] == "a"
    await proxy.wait_for(lambda: total(proxy) == 2)
    assert outcomes(proxy) == {"match": 1, "mismatch": 1}
    field = "shadowproxy_mismatch_fields_total"
    assert proxy.value(field, route="r", field="headers.x-version") == 1


async def test_a_json_answer_is_told_by_its_content_type(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    """A body that does not look like JSON (a top-level string) is parsed as JSON when the
    answer says so: the same string spelled two ways is a match, not a mismatch. Also when
    the type is not a compared header (the default compares it)."""

    def answering(body: bytes) -> Any:
        async def handler(request: web.Request) -> web.Response:
            return web.Response(body=body, content_type="application/json")

        return handler

    proxy = await proxy_factory(
        await upstream_factory(answering(b'"caf\\u00e9"')),
        await upstream_factory(answering('"café"'.encode())),
        route={"compare": {"headers": []}},
    )
    async with client.get(proxy.url + "/x") as r:
        await r.read()
    await proxy.wait_for(lambda: total(proxy) == 1)
    assert outcomes(proxy) == {"match": 1}


@pytest.mark.parametrize("failure", ["down", "slow", "error500"])
async def test_broken_shadow_never_changes_the_client_response(
    failure: str,
    upstream_factory: UpstreamFactory,
    proxy_factory: ProxyFactory,
    client: aiohttp.ClientSession,
) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.json_response({"id": 1, "name": "Ada"})

    async def error500(request: web.Request) -> web.Response:
        return web.json_response({"error": "boom"}, status=500)

    primary = await upstream_factory()
    shadow = await upstream_factory(slow if failure == "slow" else error500)
    if failure == "down":
        await shadow.stop()
    proxy = await proxy_factory(primary, shadow)
    for _ in range(3):
        async with client.get(proxy.url + "/users/1") as r:
            assert r.status == 200
            assert await r.json() == {"id": 1, "name": "Ada"}
        # A shadow 5xx is an error of the shadow, not a difference in the data.
        expected = {"down": "shadow_error", "slow": "timeout", "error500": "shadow_error"}[failure]
    await proxy.wait_for(lambda: total(proxy) == 3)
    assert outcomes(proxy) == {expected: 3}


async def test_full_queue_drops_and_counts(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    gate = asyncio.Event()

    async def stuck(request: web.Request) -> web.Response:
        await gate.wait()
        return web.json_response({"id": 1, "name": "Ada"})

    proxy = await proxy_factory(
        await upstream_factory(),
        await upstream_factory(stuck),
        shadow={"queue_size": 2, "concurrency": 1, "timeout_seconds": 5},
    )
    for _ in range(10):
        async with client.get(proxy.url + "/x") as r:
            assert r.status == 200
    # one job running, two waiting, seven dropped
    await proxy.wait_for(lambda: outcomes(proxy).get("dropped") == 7)
    assert proxy.value("shadowproxy_shadow_dropped_total", route="r", reason="queue_full") == 7
    gate.set()
    await proxy.wait_for(lambda: outcomes(proxy).get("match") == 3)


async def test_unsafe_methods_are_not_shadowed_unless_configured(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    shadow = await upstream_factory()
    proxy = await proxy_factory(await upstream_factory(), shadow)
    async with client.post(proxy.url + "/users", json={"a": 1}) as r:
        assert r.status == 200
    async with client.get(proxy.url + "/users/1") as r:
        assert r.status == 200
    await proxy.wait_for(lambda: total(proxy) == 1)
    assert [s.method for s in shadow.seen] == ["GET"]

    shadow2 = await upstream_factory()
    proxy2 = await proxy_factory(
        await upstream_factory(), shadow2, route={"shadow_methods": ["GET", "POST"]}
    )
    async with client.post(proxy2.url + "/users", json={"a": 1}) as r:
        assert r.status == 200
    await proxy2.wait_for(lambda: total(proxy2) == 1)
    assert [s.method for s in shadow2.seen] == ["POST"]


async def test_deterministic_sampling_by_key(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    shadow = await upstream_factory()
    proxy = await proxy_factory(
        await upstream_factory(), shadow, route={"sample": 0.5, "sample_key": "path"}
    )
    for _round in range(3):
        for i in range(40):
            async with client.get(f"{proxy.url}/users/{i}") as r:
                assert r.status == 200
    await asyncio.sleep(0.2)
    await proxy.wait_for(lambda: total(proxy) == len(shadow.seen))
    paths = [s.path_qs for s in shadow.seen]
    sampled = set(paths)
    assert 5 < len(sampled) < 35  # about half of 40 keys
    assert all(paths.count(p) == 3 for p in sampled)  # a key is always or never sampled


async def test_body_over_compare_cap_is_skipped(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 5000)

    proxy = await proxy_factory(
        await upstream_factory(big), await upstream_factory(big), shadow={"body_max_bytes": 1000}
    )
    async with client.get(proxy.url + "/x") as r:
        assert len(await r.read()) == 5000
    await proxy.wait_for(lambda: total(proxy) == 1)
    assert outcomes(proxy) == {"skipped": 1}
    assert proxy.value("shadowproxy_compare_skipped_total", route="r", reason="body_over_cap") == 1


async def test_past_the_comparison_cpu_budget_differing_answers_are_not_judged(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    """With no comparison CPU left (share 0, nothing at once), answers whose bytes differ
    are counted as skipped, never as a match or a mismatch; equal bytes are still a match;
    the client always gets the primary's answer; and readiness counts them as ``unjudged``
    and estimates its mismatch rate from them (none judged: each counts against it)."""
    proxy = await budget_proxy(upstream_factory, proxy_factory, compare_cpu_share=0)
    for key in ("1", "2", "2", "3", "4"):  # equal, differing twice, 404 on both, reordered
        async with client.get(f"{proxy.url}/users/{key}") as r:
            assert (r.status, await r.json()) == (
                (200, LEGACY[key]) if key in LEGACY else (404, {"error": "nope"})
            )
    await proxy.wait_for(lambda: total(proxy) == 5)
    assert outcomes(proxy) == {"match": 2, "skipped": 3}
    assert proxy.value("shadowproxy_compare_skipped_total", route="r", reason="cpu_budget") == 3
    assert not proxy.value("shadowproxy_diff_summarised_total", route="r")
    stats = await readiness_stats(client, proxy)
    assert (stats["comparisons"], stats["unjudged"], stats["parsed_match"]) == (2, 3, 0)
    assert stats["mismatch_rate_upper95"] == pytest.approx(3 / 5)


async def test_bodies_equal_once_parsed_are_matches_readiness_counts_as_judged(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    proxy = await budget_proxy(upstream_factory, proxy_factory, compare_cpu_share=None)
    for key in ("1", "4", "4", "2"):  # equal, reordered twice, differing
        async with client.get(f"{proxy.url}/users/{key}") as r:
            assert (r.status, await r.json()) == (200, LEGACY[key])
    await proxy.wait_for(lambda: total(proxy) == 4)
    assert outcomes(proxy) == {"match": 3, "mismatch": 1}
    assert proxy.value("shadowproxy_compare_parsed_matches_total", route="r") == 2
    stats = await readiness_stats(client, proxy)
    assert (stats["comparisons"], stats["unjudged"], stats["parsed_match"]) == (4, 0, 2)
    assert stats["mismatch_rate"] == 1 / 4


LEGACY = {"1": {"id": 1, "name": "a"}, "2": {"id": 2, "name": "b"}, "4": {"id": 4, "name": "d"}}
CANDIDATE = {
    "1": {"id": 1, "name": "a"},
    "2": {"id": 2, "name": "changed"},
    "4": {"name": "d", "id": 4},  # the same value written in another key order
}
BUDGET_TOKEN = "budget-t0ken"


async def budget_proxy(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, **shadow: Any
) -> RunningProxy:
    return await proxy_factory(
        await upstream_factory(user_handler(LEGACY)),
        await upstream_factory(user_handler(CANDIDATE)),
        shadow={**shadow, "compare_cpu_burst_seconds": 0},
        readiness={"flush_interval_seconds": 0.05, "min_comparisons": 1},
        env={"SHADOWPROXY_ADMIN_TOKEN": BUDGET_TOKEN},
    )


async def readiness_stats(client: aiohttp.ClientSession, proxy: RunningProxy) -> Any:
    auth = {"Authorization": f"Bearer {BUDGET_TOKEN}"}
    async with client.get(f"{proxy.admin_url}/readiness?target=r", headers=auth) as r:
        assert r.status == 200
        (found,) = (await r.json())["verdicts"]
    return found["stats"]


async def test_primary_failure_gives_envelope_and_counts(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    primary = await upstream_factory()
    proxy = await proxy_factory(primary, await upstream_factory())
    await primary.stop()
    async with client.get(proxy.url + "/x", headers={"X-Request-ID": "abc"}) as r:
        assert r.status == 502
        body = await r.json()
    assert body["error"]["code"] == "bad_gateway"
    assert body["error"]["request_id"] == "abc"
    assert outcomes(proxy) == {"primary_error": 1}


async def test_slow_primary_gives_504(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(text="late")

    primary = await upstream_factory(slow)
    # The timeout comes from an environment override, as an operator would set it.
    proxy = await proxy_factory(
        primary, env={"SHADOWPROXY__BACKENDS__PRIMARY__TIMEOUT_SECONDS": "0.3"}
    )
    assert proxy.settings.backends["primary"].timeout_seconds == 0.3
    async with client.get(proxy.url + "/x") as r:
        assert r.status == 504
        assert (await r.json())["error"]["code"] == "gateway_timeout"


async def test_requester_label_is_bounded(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    proxy = await proxy_factory(await upstream_factory(), requesters={"known": ["web"]})
    for requester in ["web", "evil-1", "evil-2", None]:
        headers = {"X-Requester-ID": requester} if requester else {}
        async with client.get(proxy.url + "/x", headers=headers) as r:
            assert r.status == 200
    req = "shadowproxy_requests_total"
    labels = {"route": "r", "method": "GET", "status": "200"}
    assert proxy.value(req, **labels, requester="web") == 1
    assert proxy.value(req, **labels, requester="other") == 2
    assert proxy.value(req, **labels, requester="none") == 1
