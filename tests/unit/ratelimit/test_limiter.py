"""Which bucket a request takes from, the 429 and its Retry-After, bounded labels, and what
happens when the buckets' store fails (open by default, closed on request)."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from proxy.errors import TooManyRequests, Unavailable, problem_response
from proxy.ratelimit.bucket import Decision, MemoryBuckets
from proxy.ratelimit.config import Rate, RateLimitConfig
from proxy.ratelimit.limiter import GLOBAL, RateLimiter, RateLimitMetrics, bucket_id

CONFIG = RateLimitConfig.model_validate(
    {
        "default": {"rate": 1, "burst": 2},
        "requesters": {"web": {"rate": 10, "burst": 20}},
        "targets": {
            "users": {
                "default": {"rate": 3, "burst": 4},
                "requesters": {"batch": {"rate": 5, "burst": 6}},
            },
            "orders": {"requesters": {"web": {"rate": 7, "burst": 8}}},
        },
    }
)


PASS = Decision(True)


class FakeBuckets:
    def __init__(self, answer: Decision | Exception = PASS) -> None:
        self.answer = answer
        self.keys: list[str] = []

    async def take(self, key: str, rate: Rate) -> Decision:
        self.keys.append(key)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def limiter(
    buckets: Any, config: RateLimitConfig = CONFIG, **over: Any
) -> tuple[RateLimiter, CollectorRegistry]:
    registry = CollectorRegistry()
    config = config.model_copy(update=over)
    return RateLimiter(config, buckets, RateLimitMetrics.create(registry), frozenset()), registry


def test_the_most_specific_entry_wins_and_a_target_entry_is_its_own_bucket() -> None:
    limit, _ = limiter(FakeBuckets())
    assert limit.rate_for("users", "batch") == ("users", Rate(rate=5, burst=6))
    assert limit.rate_for("users", "web") == ("users", Rate(rate=3, burst=4))  # target default
    assert limit.rate_for("orders", "web") == ("orders", Rate(rate=7, burst=8))
    assert limit.rate_for("orders", "mobile") == (GLOBAL, Rate(rate=1, burst=2))
    assert limit.rate_for("other-route", "web") == (GLOBAL, Rate(rate=10, burst=20))
    assert limit.rate_for("other-route", None) == (GLOBAL, Rate(rate=1, burst=2))
    named_only = RateLimitConfig.model_validate({"requesters": {"web": {"rate": 1, "burst": 1}}})
    limit, _ = limiter(FakeBuckets(), named_only)
    assert limit.rate_for("r", "mobile") is None  # no default: not limited


def test_from_settings_builds_nothing_without_a_limit() -> None:
    registry = CollectorRegistry()
    assert RateLimiter.from_settings(None, registry) is None
    assert RateLimiter.from_settings(RateLimitConfig(store="redis"), registry) is None
    assert RateLimiter.from_settings(CONFIG, registry) is not None


def test_long_ids_are_hashed_into_a_short_key() -> None:
    assert bucket_id("web") == "web"
    assert bucket_id(None) == ""
    long = bucket_id("x" * 8000)
    assert long.startswith("h:") and len(long) == 34
    assert long != bucket_id("x" * 7999)


async def test_a_refusal_is_a_429_with_retry_after_rounded_up_in_the_envelope() -> None:
    limit, registry = limiter(FakeBuckets(Decision(False, 1.2)))
    with pytest.raises(TooManyRequests) as e:
        await limit.check("users", "mobile")
    assert e.value.headers == {"Retry-After": "2"}
    response = problem_response(e.value, "rid-1")
    assert response.status == 429 and response.headers["Retry-After"] == "2"
    assert b'"code":"rate_limited"' in response.body  # type: ignore[operator]
    assert (
        registry.get_sample_value(
            "shadowproxy_rate_limited_total", {"target": "users", "requester": "other"}
        )
        == 1.0
    )

    limit, _ = limiter(FakeBuckets(Decision(False, 0.001)))
    with pytest.raises(TooManyRequests) as e:
        await limit.check("users", "web")
    assert e.value.headers == {"Retry-After": "1"}  # never 0


async def test_a_flood_of_distinct_ids_keeps_the_labels_bounded() -> None:
    buckets = MemoryBuckets(max_buckets=50)
    registry = CollectorRegistry()
    limit = RateLimiter(
        CONFIG.model_copy(update={"default": Rate(rate=0.001, burst=1)}),
        _Sync(buckets),
        RateLimitMetrics.create(registry),
        frozenset({"mobile"}),
    )
    for i in range(2000):
        for _ in range(2):
            with contextlib.suppress(TooManyRequests):
                await limit.check("r", f"id-{i}")
    for named in ("web", "mobile", None):
        for _ in range(30):
            with contextlib.suppress(TooManyRequests):
                await limit.check("users", named)
    labels = {
        s.labels["requester"]
        for m in registry.collect()
        if m.name == "shadowproxy_rate_limited"
        for s in m.samples
    }
    assert labels == {"other", "web", "mobile", "none"}  # 2,000 ids, one label for them
    assert (
        registry.get_sample_value(
            "shadowproxy_rate_limited_total", {"target": "r", "requester": "other"}
        )
        == 2000.0
    )
    assert len(buckets) == 50


class _Sync:
    def __init__(self, buckets: MemoryBuckets) -> None:
        self.buckets = buckets

    async def take(self, key: str, rate: Rate) -> Decision:
        return self.buckets.take(key, rate)


async def test_a_failing_store_lets_requests_through_counts_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    buckets = FakeBuckets(ConnectionError("refused"))
    limit, registry = limiter(buckets, retry_after_seconds=0)
    with caplog.at_level(logging.ERROR, "shadowproxy.ratelimit"):
        for _ in range(20):
            await limit.check("users", "web")
    assert registry.get_sample_value("shadowproxy_rate_limit_store_errors_total") == 20.0
    lines = [r for r in caplog.records if r.name == "shadowproxy.ratelimit"]
    assert len(lines) == 1 and "letting requests through" in lines[0].getMessage()


async def test_after_a_failure_the_store_is_left_alone_for_retry_after_seconds() -> None:
    buckets = FakeBuckets(TimeoutError())
    limit, registry = limiter(buckets, retry_after_seconds=60)
    for _ in range(5):
        await limit.check("users", "web")
    assert len(buckets.keys) == 1
    assert registry.get_sample_value("shadowproxy_rate_limit_store_errors_total") == 1.0


async def test_fail_closed_answers_503_while_the_store_is_down() -> None:
    limit, _ = limiter(FakeBuckets(ConnectionError()), fail_closed=True, retry_after_seconds=2)
    for _ in range(2):  # the failing call, then the skipped one
        with pytest.raises(Unavailable) as e:
            await limit.check("users", "web")
        assert e.value.headers == {"Retry-After": "2"}
