"""The guardrail's arithmetic and arming, with a fake flag store and an injected clock."""

from __future__ import annotations

import asyncio
from typing import Any

from comparators.model import Comparison, Outcome
from proxy.control.guardrail import Guardrail
from proxy.experiment.publish import Experiment
from proxy.flags import FlagSnapshot, ResourceFlagState
from proxy.flags.store import FlagChange
from proxy.settings import GuardrailSettings


class FakeFlags:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def set(self, target: str, flag: str, value: Any, **kw: Any) -> None:
        self.calls.append((target, flag, value, kw["actor"], kw["force"], kw["reason"]))


def snapshot(read_from: str) -> FlagSnapshot:
    state = ResourceFlagState(read_from, ("postgres", "dynamodb"), 1.0)
    return FlagSnapshot(1, {"users": state}, {})


def experiment(outcome: Outcome, new_side: str = "primary") -> Experiment:
    return Experiment(
        route="users", operation="get", method="GET", path="/users/1", request_id="r",
        requester=None, primary_status=None, shadow_status=None, primary_seconds=0.001,
        shadow_seconds=0.001, comparison=Comparison(outcome), new_side=new_side,
    )  # fmt: skip


def armed(clock: list[float], **settings: Any) -> tuple[Guardrail, FakeFlags]:
    flags = FakeFlags()
    config = GuardrailSettings(
        watch_seconds=60, min_comparisons=10, max_primary_error_rate=0.2,
        max_mismatch_rate=0.1, **settings,
    )  # fmt: skip
    guard = Guardrail(
        flag_store=flags,  # type: ignore[arg-type]
        settings={"users": config},
        new_stores={"users": "dynamodb"},
        clock=lambda: clock[0],
    )
    guard.on_change(FlagChange(snapshot("postgres"), snapshot("dynamodb")))
    return guard, flags


async def test_error_rate_over_threshold_flips_back_once() -> None:
    clock = [0.0]
    guard, flags = armed(clock)
    for _ in range(7):
        guard.observe(experiment(Outcome.MATCH))
    for _ in range(3):
        guard.observe(experiment(Outcome.PRIMARY_ERROR))  # 3/10 = 30% > 20%
    for _ in range(5):
        guard.observe(experiment(Outcome.PRIMARY_ERROR))  # fired already: no second flip
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(flags.calls) == 1
    target, flag, value, actor, force, reason = flags.calls[0]
    assert (target, flag, value, actor, force) == (
        "users",
        "read_from",
        "postgres",
        "guardrail",
        True,
    )
    assert "error rate" in reason


async def test_below_minimum_or_at_threshold_does_nothing() -> None:
    clock = [0.0]
    guard, flags = armed(clock)
    for _ in range(8):
        guard.observe(experiment(Outcome.MATCH))
    guard.observe(experiment(Outcome.PRIMARY_ERROR))  # 9 reads: under min_comparisons
    await asyncio.sleep(0)
    assert flags.calls == []
    guard.observe(experiment(Outcome.PRIMARY_ERROR))  # 2/10 = 20%: not over
    await asyncio.sleep(0)
    assert flags.calls == []


async def test_mismatches_against_the_old_store_flip_back() -> None:
    clock = [0.0]
    guard, flags = armed(clock)
    for outcome in [Outcome.MATCH] * 8 + [Outcome.MISMATCH] * 2:
        guard.observe(experiment(outcome))
    await asyncio.sleep(0)
    assert flags.calls and "mismatch rate" in flags.calls[0][5]


async def test_transients_shadow_side_and_expired_watch_are_ignored() -> None:
    clock = [0.0]
    guard, flags = armed(clock)
    for _ in range(20):
        guard.observe(experiment(Outcome.TRANSIENT))
        guard.observe(experiment(Outcome.MISMATCH, new_side="shadow"))  # not the new primary
    await asyncio.sleep(0)
    assert flags.calls == []
    clock[0] = 61.0
    guard.observe(experiment(Outcome.PRIMARY_ERROR))
    assert "users" not in guard.watches


def test_flipping_back_by_hand_disarms() -> None:
    clock = [0.0]
    guard, _ = armed(clock)
    assert "users" in guard.watches
    guard.on_change(FlagChange(snapshot("dynamodb"), snapshot("postgres")))
    assert "users" not in guard.watches
