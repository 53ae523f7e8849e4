"""The guardrail's arithmetic and arming (read flips and canaries), with a fake flag store and
an injected clock; one process's counts (``tests/integration/control`` has the fleet's)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import Any

from prometheus_client import CollectorRegistry

from comparators import UNJUDGED
from comparators.model import Comparison, Outcome
from proxy.control.guardrail import Guardrail, GuardrailMetrics
from proxy.experiment.publish import Experiment
from proxy.flags import FlagSnapshot, ResourceFlagState
from proxy.flags.audit import AuditEntry
from proxy.flags.store import FlagChange
from proxy.settings import GuardrailSettings


class FakeFlags:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def set(self, target: str, flag: str, value: Any, **kw: Any) -> None:
        self.calls.append((target, flag, value, kw["actor"], kw["force"], kw["reason"]))


def snapshot(read_from: str, fraction: float = 0.0, *, version: int = 1) -> FlagSnapshot:
    state = ResourceFlagState(read_from, ("postgres", "dynamodb"), 1.0, fraction)
    return FlagSnapshot(version, {"users": state}, {})


def experiment(outcome: Outcome, new_side: str = "primary") -> Experiment:
    return Experiment(
        route="users", operation="get", method="GET", path="/users/1", request_id="r",
        requester=None, primary_status=None, shadow_status=None, primary_seconds=0.001,
        shadow_seconds=0.001, comparison=Comparison(outcome), new_side=new_side,
    )  # fmt: skip


def armed(
    clock: list[float], change: FlagChange | None = None, **settings: Any
) -> tuple[Guardrail, FakeFlags]:
    flags = FakeFlags()
    limits = {"watch_seconds": 60, "min_comparisons": 10, "max_primary_error_rate": 0.2,
              "max_mismatch_rate": 0.1, **settings}  # fmt: skip
    config = GuardrailSettings.model_validate(limits)
    guard = Guardrail(
        flag_store=flags,  # type: ignore[arg-type]
        settings={"users": config},
        new_stores={"users": "dynamodb"},
        clock=lambda: clock[0],
    )
    guard.on_change(change or FlagChange(snapshot("postgres"), snapshot("dynamodb")))
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


async def test_a_difference_the_cpu_budget_did_not_judge_counts_as_a_mismatch() -> None:
    clock = [0.0]
    guard, flags = armed(clock)
    for _ in range(8):
        guard.observe(experiment(Outcome.MATCH))
    skipped = experiment(Outcome.SKIPPED)  # skipped for another reason: not counted
    for _ in range(5):
        guard.observe(skipped)
    await asyncio.sleep(0)
    assert flags.calls == []
    for _ in range(2):
        guard.observe(dataclasses.replace(skipped, comparison=UNJUDGED))  # 2 / 10 > 10%
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


# --- canaries: reads served by the new store under new_store_read_fraction ------------------


def canary(fraction: float, before: float = 0.0) -> FlagChange:
    return FlagChange(snapshot("postgres", before), snapshot("postgres", fraction, version=2))


async def test_a_canary_with_many_mismatches_is_ended() -> None:
    """The reported case: a 50% canary with 131 mismatches in 501 reads never rolled back."""
    clock = [0.0]
    guard, flags = armed(clock, canary(0.5), min_comparisons=50, max_mismatch_rate=0.01)
    assert guard.watches["users"].kind == "canary"
    outcomes = [Outcome.MISMATCH] * 131 + [Outcome.MATCH] * 370
    random.Random(11).shuffle(outcomes)
    for outcome in outcomes:
        guard.observe(experiment(outcome))
        guard.observe(experiment(Outcome.MISMATCH, new_side="shadow"))  # the old store's reads
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(flags.calls) == 1
    target, flag, value, actor, force, reason = flags.calls[0]
    assert (target, flag, value, actor, force) == (
        "users",
        "new_store_read_fraction",
        0.0,
        "guardrail",
        True,
    )
    assert reason.startswith("canary (new_store_read_fraction 0.5) dynamodb mismatch rate")
    assert "against postgres" in reason


async def test_a_canary_whose_new_store_fails_is_ended() -> None:
    clock = [0.0]
    guard, flags = armed(clock, canary(0.1))
    for outcome in [Outcome.MATCH] * 7 + [Outcome.PRIMARY_ERROR] * 3:
        guard.observe(experiment(outcome))
    await asyncio.sleep(0)
    assert [c[1:3] for c in flags.calls] == [("new_store_read_fraction", 0.0)]
    assert "error rate 30.00% over 10 reads" in flags.calls[0][5]


def test_each_new_fraction_arms_afresh_and_zero_disarms() -> None:
    clock = [0.0]
    guard, _ = armed(clock, canary(0.1))
    first = guard.watches["users"]
    for _ in range(5):
        guard.observe(experiment(Outcome.MATCH))
    clock[0] = 30.0
    guard.on_change(canary(0.5, before=0.1))
    second = guard.watches["users"]
    assert second is not first and second.local.reads == 0 and second.until == 90.0
    assert second.signature == "canary=0.5"
    guard.on_change(FlagChange(snapshot("postgres", 0.5), snapshot("postgres", 0.0)))
    assert "users" not in guard.watches


def test_a_read_flip_during_a_canary_arms_a_read_watch() -> None:
    clock = [0.0]
    guard, _ = armed(clock, canary(0.2))
    guard.on_change(FlagChange(snapshot("postgres", 0.2), snapshot("dynamodb", 0.2)))
    watch = guard.watches["users"]
    assert (watch.kind, watch.old_store, watch.signature) == (
        "read_from",
        "postgres",
        "read_from=dynamodb",
    )
    # the new store serves every read now: a fraction change is no new episode
    guard.on_change(FlagChange(snapshot("dynamodb", 0.2), snapshot("dynamodb", 0.0)))
    assert guard.watches["users"] is watch


async def test_a_read_rollback_that_leaves_a_canary_keeps_watching_it() -> None:
    clock = [0.0]
    guard, flags = armed(clock, FlagChange(snapshot("postgres", 0.3), snapshot("dynamodb", 0.3)))
    for _ in range(10):
        guard.observe(experiment(Outcome.PRIMARY_ERROR))
    await asyncio.sleep(0)
    assert [c[1:3] for c in flags.calls] == [("read_from", "postgres")]
    guard.on_change(FlagChange(snapshot("dynamodb", 0.3), snapshot("postgres", 0.3)))
    assert guard.watches["users"].kind == "canary"  # 30% of keys still read the new store


def test_no_canary_watch_without_the_new_store_in_write_to() -> None:
    clock = [0.0]
    old = FlagSnapshot(1, {"users": ResourceFlagState("postgres", ("postgres",), 1.0)}, {})
    new = FlagSnapshot(2, {"users": ResourceFlagState("postgres", ("postgres",), 1.0, 0.5)}, {})
    guard, _ = armed(clock, FlagChange(old, new))
    assert guard.watches == {}


class RecordingFlags(FakeFlags):
    """Answers like a flag store: the audit entry, old == new when nothing changed."""

    def __init__(self, current: str) -> None:
        super().__init__()
        self.current = current

    async def set(self, target: str, flag: str, value: Any, **kw: Any) -> AuditEntry:
        await super().set(target, flag, value, **kw)
        old, self.current = self.current, value
        return AuditEntry(0.0, kw["actor"], target, flag, old, value, kw["reason"], kw["force"])


async def test_rollbacks_are_counted_from_zero_and_only_when_they_changed_a_flag() -> None:
    registry = CollectorRegistry()
    flags = RecordingFlags("dynamodb")
    config = GuardrailSettings.model_validate({"min_comparisons": 2, "max_mismatch_rate": 0.1})
    guard = Guardrail(
        flag_store=flags,  # type: ignore[arg-type]
        settings={"users": config},
        new_stores={"users": "dynamodb"},
        metrics=GuardrailMetrics.create(registry),
    )

    def rollbacks() -> float | None:
        return registry.get_sample_value(
            "shadowproxy_guardrail_rollbacks_total", {"target": "users"}
        )

    assert rollbacks() == 0.0  # exported before the first rollback, so increase() sees it
    for already_rolled_back in (False, True):
        flags.current = "postgres" if already_rolled_back else "dynamodb"
        guard.on_change(FlagChange(snapshot("postgres"), snapshot("dynamodb")))
        for _ in range(2):
            guard.observe(experiment(Outcome.MISMATCH))
        for _ in range(3):
            await asyncio.sleep(0)
    assert len(flags.calls) == 2
    assert rollbacks() == 1.0  # the second found the flag rolled back by another instance
