"""The recorder and the in-process window, with an injected clock."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping

import pytest
from prometheus_client import CollectorRegistry

from proxy.readiness import (
    RESOURCE_OPERATIONS,
    MemoryWindow,
    Readiness,
    ReadinessConfig,
    ReadinessMetrics,
    ReadinessRecorder,
    WriteFacts,
)
from proxy.readiness.histogram import OVERFLOW, bucket_index
from proxy.readiness.window import Deltas, window_buckets

T0 = 1_700_000_000.0  # a multiple of 10


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(
    clock: Clock, *, window: int = 60, bucket: int = 10
) -> tuple[ReadinessRecorder, MemoryWindow]:
    store = MemoryWindow(window_seconds=window, bucket_seconds=bucket)
    return ReadinessRecorder(store, clock=clock), store


async def test_counts_and_latency_sides_follow_the_new_store() -> None:
    clock = Clock()
    recorder, store = make(clock)
    recorder.record("users", "get", "match", 0.004, 0.020, new_side="shadow")
    recorder.record("users", "get", "mismatch", 0.004, 0.020, new_side="shadow")
    recorder.record("users", "list", "transient", 0.004, None, new_side="shadow")
    assert recorder.pending_buckets == 1
    assert await recorder.flush()
    assert recorder.pending_buckets == 0
    totals = await store.read("users", clock())
    assert totals.counts == {("get", "match"): 1, ("get", "mismatch"): 1, ("list", "transient"): 1}
    assert totals.latency["old"] == {bucket_index(0.004): 3}
    assert totals.latency["new"] == {bucket_index(0.020): 2}
    assert (totals.start, totals.end) == (T0 - 60, T0)

    # after a flip the primary is the new store
    recorder.record("users", "get", "match", 0.030, 0.002, new_side="primary")
    await recorder.flush()
    totals = await store.read("users", clock())
    assert totals.latency["new"] == {bucket_index(0.020): 2, bucket_index(0.030): 1}
    assert totals.latency["old"] == {bucket_index(0.004): 3, bucket_index(0.002): 1}


async def test_which_outcomes_record_latency() -> None:
    clock = Clock()
    recorder, store = make(clock)
    recorder.record("users", "get", "timeout", 0.004, None, new_side="shadow")
    recorder.record("users", "get", "timeout", 0.004, 0.5, new_side="shadow")
    recorder.record("users", "get", "shadow_error", 0.004, 0.001, new_side="shadow")
    recorder.record("users", "get", "primary_error", 0.0, None, new_side="shadow")
    recorder.record("users", "get", "dropped", 0.004, None, new_side="shadow")
    recorder.record("users", "get", "skipped", 0.004, None, new_side="shadow")
    await recorder.flush()
    totals = await store.read("users", clock())
    assert totals.latency["new"] == {OVERFLOW: 2}  # timeouts only, as slower than anything
    assert totals.latency["old"] == {bucket_index(0.004): 3}
    assert totals.attempts == 3 and totals.comparisons == 0 and totals.primary_errors == 1
    assert totals.outcome("dropped") == 1 and totals.outcome("skipped") == 1


async def test_a_parsed_match_is_a_match_and_counted_as_itself() -> None:
    clock = Clock()
    recorder, store = make(clock)
    recorder.record("users", "get", "parsed_match", 0.004, 0.020, new_side="shadow")
    recorder.record("users", "get", "unjudged", 0.004, 0.020, new_side="shadow")
    await recorder.flush()
    totals = await store.read("users", clock())
    assert totals.outcome("match") == 1 and totals.outcome("parsed_match") == 1
    assert totals.comparisons == 1  # the unjudged one is not a comparison
    assert totals.outcome("unjudged") == 1
    assert totals.latency["new"] == {bucket_index(0.020): 1}  # one latency sample per answer


async def test_outcome_enum_values_are_accepted() -> None:
    from comparators.model import Outcome

    clock = Clock()
    recorder, store = make(clock)
    for outcome in Outcome:
        recorder.record("users", "get", outcome, 0.001, 0.001, new_side="shadow")
    await recorder.flush()
    totals = await store.read("users", clock())
    assert set(totals.by_outcome) == {o.value for o in Outcome}
    # match + mismatch + transient + noise; plus shadow_error + timeout
    assert totals.comparisons == 4 and totals.attempts == 6


def test_new_side_must_be_a_role() -> None:
    recorder, _ = make(Clock())
    with pytest.raises(ValueError, match="new_side"):
        recorder.record("users", "get", "match", 0.1, 0.1, new_side="new")


async def test_targets_are_kept_apart() -> None:
    clock = Clock()
    recorder, store = make(clock)
    recorder.record("users", "get", "match", 0.001, 0.001, new_side="shadow")
    recorder.record("orders", "GET", "mismatch", 0.001, 0.001, new_side="shadow")
    await recorder.flush()
    assert (await store.read("users", clock())).counts == {("get", "match"): 1}
    assert (await store.read("orders", clock())).counts == {("GET", "mismatch"): 1}
    assert (await store.read("nobody", clock())).counts == {}


def test_window_bucket_range() -> None:
    # buckets whose start is later than now - window: 60 s / 10 s → 6 buckets, current included
    assert window_buckets(T0, 60, 10) == range(int(T0 // 10) - 5, int(T0 // 10) + 1)
    assert window_buckets(T0 + 9.9, 60, 10) == window_buckets(T0, 60, 10)
    assert window_buckets(T0 + 10, 60, 10) == range(int(T0 // 10) - 4, int(T0 // 10) + 2)
    assert window_buckets(T0 + 5, 65, 10) == range(int(T0 // 10) - 5, int(T0 // 10) + 1)


async def test_buckets_older_than_the_window_are_excluded() -> None:
    clock = Clock()
    recorder, store = make(clock, window=60, bucket=10)
    recorder.record("users", "get", "mismatch", 0.001, 0.001, new_side="shadow")  # bucket T0
    clock.now = T0 + 30
    recorder.record("users", "get", "match", 0.001, 0.001, new_side="shadow")  # bucket T0+30
    await recorder.flush()

    async def seen(at: float) -> Mapping[tuple[str, str], int]:
        return (await store.read("users", at)).counts

    assert await seen(T0 + 59.9) == {("get", "mismatch"): 1, ("get", "match"): 1}
    # at T0 + 60 the bucket starting at T0 is no longer later than now - window
    assert await seen(T0 + 60) == {("get", "match"): 1}
    assert await seen(T0 + 89.9) == {("get", "match"): 1}
    assert await seen(T0 + 90) == {}
    # reading "in the past" does not see the future either
    assert await seen(T0 + 5) == {("get", "mismatch"): 1}


async def test_memory_window_forgets_old_buckets() -> None:
    clock = Clock()
    recorder, store = make(clock, window=60, bucket=10)
    for step in range(100):
        clock.now = T0 + 10 * step
        recorder.record("users", "get", "match", 0.001, 0.001, new_side="shadow")
        await recorder.flush()
    assert store.bucket_count("users") <= 8
    assert (await store.read("users", clock())).comparisons == 6


class FlakyWindow(MemoryWindow):
    def __init__(self) -> None:
        super().__init__(window_seconds=60, bucket_seconds=10)
        self.failing = True

    async def add(self, deltas: Deltas) -> None:
        if self.failing:
            raise ConnectionError("store down")
        await super().add(deltas)


async def test_a_failed_flush_keeps_the_deltas_for_the_next() -> None:
    clock = Clock()
    store = FlakyWindow()
    registry = CollectorRegistry()
    metrics = ReadinessMetrics.create(registry)
    recorder = ReadinessRecorder(store, clock=clock, metrics=metrics)
    recorder.record("users", "get", "match", 0.001, 0.001, new_side="shadow")
    assert not await recorder.flush()
    recorder.record("users", "get", "match", 0.001, 0.001, new_side="shadow")
    assert not await recorder.flush()
    assert registry.get_sample_value("shadowproxy_readiness_flush_failures_total") == 2
    store.failing = False
    assert await recorder.flush()
    assert (await store.read("users", clock())).comparisons == 2


async def test_a_failed_flush_drops_what_left_the_window() -> None:
    clock = Clock()
    store = FlakyWindow()
    recorder = ReadinessRecorder(store, clock=clock)
    recorder.record("users", "get", "match", 0.001, 0.001, new_side="shadow")
    clock.now = T0 + 1000
    assert not await recorder.flush()
    assert recorder.pending_buckets == 0


async def test_background_flush_and_close() -> None:
    store = MemoryWindow(window_seconds=60, bucket_seconds=10)
    recorder = ReadinessRecorder(store, flush_interval_seconds=0.02)
    recorder.start()
    recorder.start()  # idempotent
    recorder.record("users", "get", "match", 0.001, 0.001, new_side="shadow")
    for _ in range(200):  # poll: flushed by the task, not by us
        if (await store.read("users", _now())).comparisons == 1:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the background flush never ran")
    recorder.record("users", "get", "match", 0.001, 0.001, new_side="shadow")
    await recorder.close()
    assert (await store.read("users", _now())).comparisons == 2
    assert recorder.pending_buckets == 0


def _now() -> float:
    return time.time()


async def test_readiness_facade_evaluates_and_exports_the_gauge() -> None:
    clock = Clock()
    registry = CollectorRegistry()
    config = ReadinessConfig(window_seconds=60, bucket_seconds=10, min_comparisons=10,
                             max_mismatch_rate=0.5)  # fmt: skip
    readiness = Readiness(config, metrics=ReadinessMetrics.create(registry), clock=clock)
    assert isinstance(readiness.window, MemoryWindow)
    readiness.start()
    for op in RESOURCE_OPERATIONS:
        for _ in range(5):
            readiness.record("users", op, "match", 0.002, 0.003, new_side="shadow")
    v = await readiness.evaluate("users", required_operations=RESOURCE_OPERATIONS)
    assert v.ready, v
    assert registry.get_sample_value("shadowproxy_readiness_ready", {"target": "users"}) == 1
    readiness.record("users", "get", "shadow_error", 0.002, None, new_side="shadow")
    v = await readiness.evaluate("users", required_operations=("get", "scan"))
    assert not v.ready
    assert registry.get_sample_value("shadowproxy_readiness_ready", {"target": "users"}) == 0
    w = await readiness.evaluate_writes(
        "users", required_operations=RESOURCE_OPERATIONS, facts=WriteFacts()
    )
    assert not w.ready and w.decision == "stop_old_writes"
    # a write verdict is not exported
    assert registry.get_sample_value("shadowproxy_readiness_ready", {"target": "users"}) == 0
    assert v.stats["comparisons"] == 20 and math.isclose(v.stats["shadow_error_rate"] or 0, 1 / 21)
    await readiness.close()
