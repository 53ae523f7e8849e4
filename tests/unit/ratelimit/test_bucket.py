"""The token bucket against a reference model, on a fake clock; the LRU stays bounded."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.ratelimit.bucket import Bucket, MemoryBuckets
from proxy.ratelimit.config import Rate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Reference:
    """The bucket as the definition says, in exact arithmetic: starts full, gains ``rate``
    tokens a second up to ``burst``, a request is let through when a whole token is there."""

    def __init__(self, rate: int, burst: int) -> None:
        self.rate, self.burst = Fraction(rate), Fraction(burst)
        self.tokens = Fraction(burst)

    def step(self, elapsed: Fraction) -> bool:
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def test_a_full_bucket_lets_the_burst_through_then_refuses_with_the_wait() -> None:
    rate = Rate(rate=2, burst=3)
    bucket = Bucket(rate, now=0.0)
    assert [bucket.take(rate, 0.0).allowed for _ in range(3)] == [True, True, True]
    refused = bucket.take(rate, 0.0)
    assert not refused.allowed and refused.retry_after == 0.5
    assert bucket.take(rate, 0.25).retry_after == 0.25
    assert bucket.take(rate, 0.5).allowed


def test_the_bucket_never_holds_more_than_the_burst_and_a_clock_going_back_adds_nothing() -> None:
    rate = Rate(rate=10, burst=2)
    bucket = Bucket(rate, now=0.0)
    assert bucket.take(rate, 3600.0).allowed
    assert bucket.take(rate, 3600.0).allowed
    assert not bucket.take(rate, 3600.0).allowed
    assert not bucket.take(rate, 1.0).allowed  # earlier than the last look: no refill
    assert bucket.take(rate, 3600.25).allowed


@settings(max_examples=300, deadline=None)
@given(
    rate=st.integers(1, 50),
    burst=st.integers(1, 20),
    # Steps in 1/64 s: the float bucket is then exact, so it must agree with the reference
    # on every single decision, boundaries included.
    steps=st.lists(st.integers(0, 200), min_size=1, max_size=200),
)
def test_the_bucket_decides_exactly_as_the_reference_model(
    rate: int, burst: int, steps: list[int]
) -> None:
    clock = Clock()
    buckets = MemoryBuckets(max_buckets=4, clock=clock)
    reference = Reference(rate, burst)
    limit = Rate(rate=rate, burst=burst)
    allowed = 0
    for ticks in steps:
        clock.now += ticks / 64
        decision = buckets.take("k", limit)
        assert decision.allowed == reference.step(Fraction(ticks, 64))
        if not decision.allowed:
            assert 0 < decision.retry_after <= 1 / rate
        allowed += decision.allowed
    # Never more than the burst plus what the rate refilled over the whole run.
    assert allowed <= burst + rate * sum(steps) / 64


@settings(max_examples=100, deadline=None)
@given(rate=st.integers(1, 50), burst=st.integers(1, 20))
def test_waiting_the_retry_after_is_enough(rate: int, burst: int) -> None:
    clock = Clock()
    buckets = MemoryBuckets(max_buckets=1, clock=clock)
    limit = Rate(rate=rate, burst=burst)
    while (decision := buckets.take("k", limit)).allowed:
        pass
    clock.now += decision.retry_after + 1e-9
    assert buckets.take("k", limit).allowed


def test_a_flood_of_distinct_keys_keeps_at_most_max_buckets_dropping_the_least_recent() -> None:
    clock = Clock()
    buckets = MemoryBuckets(max_buckets=100, clock=clock)
    limit = Rate(rate=1, burst=1)
    assert buckets.take("steady", limit).allowed
    for i in range(10_000):
        buckets.take(f"flood-{i}", limit)
        if i % 50 == 0:
            assert not buckets.take("steady", limit).allowed  # used recently: kept, empty
    assert len(buckets) == 100
    # A bucket pushed out comes back full.
    assert buckets.take("flood-0", limit).allowed
