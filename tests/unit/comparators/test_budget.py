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
