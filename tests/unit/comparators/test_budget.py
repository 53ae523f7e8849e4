from __future__ import annotations

import pytest

from comparators.budget import DiffBudget


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refill() -> None:
    clock = FakeClock()
    budget = DiffBudget(per_second=2, burst=3, clock=clock)
    assert [budget.try_acquire() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.5
    assert budget.try_acquire()
    assert not budget.try_acquire()
    clock.now += 100
    assert budget.tokens == 0
    assert [budget.try_acquire() for _ in range(4)] == [True, True, True, False]


def test_clock_going_backwards_does_not_refill_or_break() -> None:
    clock = FakeClock()
    budget = DiffBudget(per_second=1, burst=1, clock=clock)
    assert budget.try_acquire()
    clock.now -= 10
    assert not budget.try_acquire()
    clock.now += 1
    assert budget.try_acquire()


def test_zero_budget_never_walks() -> None:
    budget = DiffBudget(per_second=0, burst=0)
    assert not budget.try_acquire()


def test_counters() -> None:
    budget = DiffBudget(per_second=1, burst=1)
    budget.record_walked()
    budget.record_summarised()
    budget.record_summarised()
    assert (budget.walked_total, budget.summarised_total) == (1, 2)
    assert budget.tolerance_walk_bytes == 16 * 1024


@pytest.mark.parametrize(
    "kwargs",
    [
        {"per_second": -1, "burst": 1},
        {"per_second": float("inf"), "burst": 1},
        {"per_second": True, "burst": 1},
        {"per_second": 1, "burst": -1},
        {"per_second": 1, "burst": 1.5},
        {"per_second": 1, "burst": False},
        {"per_second": 1, "burst": 1, "tolerance_walk_bytes": "1"},
        {"per_second": 1, "burst": 1, "tolerance_walk_bytes": True},
    ],
)
def test_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        DiffBudget(**kwargs)  # type: ignore[arg-type]


def test_without_a_cpu_share_every_comparison_may_run() -> None:
    budget = DiffBudget(per_second=0, burst=0)
    budget.charge(1000.0)
    assert all(budget.may_compare() for _ in range(3))
    assert budget.unjudged_total == 0


def test_cpu_bucket_spends_its_burst_then_refills_at_the_share() -> None:
    clock = FakeClock()
    budget = DiffBudget(per_second=1, burst=1, clock=clock, cpu_share=0.1, cpu_burst_seconds=0.2)
    assert budget.may_compare()
    budget.charge(0.15)
    assert budget.may_compare()  # 0.05 s left: a comparison may start...
    budget.charge(0.15)  # ...and overdraws the bucket by its own time
    assert budget.cpu_seconds == pytest.approx(-0.1)
    assert not budget.may_compare()
    clock.now += 0.9  # 0.1 s of CPU per second of time: -0.01 s, still nothing left
    assert not budget.may_compare()
    clock.now += 0.5
    assert budget.may_compare()
    assert budget.unjudged_total == 2
    clock.now += 1000
    assert budget.may_compare()
    assert budget.cpu_seconds == pytest.approx(0.2)  # never more than the burst


def test_zero_cpu_share_and_burst_judge_nothing() -> None:
    budget = DiffBudget(per_second=1, burst=1, cpu_share=0, cpu_burst_seconds=0)
    assert not budget.may_compare()
    assert budget.unjudged_total == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cpu_share": -0.1},
        {"cpu_share": 1.5},
        {"cpu_share": float("nan")},
        {"cpu_share": True},
        {"cpu_share": 0.1, "cpu_burst_seconds": -1},
        {"cpu_share": 0.1, "cpu_burst_seconds": float("inf")},
        {"cpu_share": 0.1, "cpu_burst_seconds": True},
    ],
)
def test_bad_cpu_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        DiffBudget(per_second=1, burst=1, **kwargs)  # type: ignore[arg-type]
