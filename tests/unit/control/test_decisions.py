"""Which flips need readiness, and how a refusal reads."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.control.decisions import Decisions, GateTarget
from proxy.flags import ResourceFlagState, RouteFlagState, UnsafeFlip
from proxy.readiness import ReadinessConfig, WindowTotals, verdict


class FakeReadiness:
    def __init__(self, ready: bool) -> None:
        counts = {("get", "match"): 5000} if ready else {}
        self.totals = WindowTotals.build("users", counts, new_seconds=[0.001] * 10)
        self.asked: list[str] = []

    async def evaluate(self, target: str, *, required_operations: Any) -> Any:
        self.asked.append(target)
        return verdict(self.totals, ReadinessConfig(), required_operations=required_operations)


def decisions(ready: bool) -> tuple[Decisions, FakeReadiness]:
    readiness = FakeReadiness(ready)
    targets = {
        "users": GateTarget("users", "resource", "dynamodb", ("get",)),
        "r": GateTarget("r", "route", "candidate", ("GET",)),
    }
    return Decisions(readiness, targets), readiness  # type: ignore[arg-type]


def res(read_from: str, fraction: float = 0.0) -> ResourceFlagState:
    return ResourceFlagState(read_from, ("postgres", "dynamodb"), 1.0, fraction)


@pytest.mark.parametrize(
    ("old", "new", "needs_readiness"),
    [
        (res("postgres"), res("dynamodb"), True),
        (res("postgres"), res("postgres", 0.1), True),
        (res("postgres", 0.2), res("postgres", 0.1), False),  # moving reads back: always allowed
        (res("dynamodb"), res("postgres"), False),
        (res("postgres"), ResourceFlagState("postgres", ("postgres", "dynamodb"), 0.5), False),
    ],
)
async def test_only_moves_toward_the_new_store_need_readiness(
    old: ResourceFlagState, new: ResourceFlagState, needs_readiness: bool
) -> None:
    gate, readiness = decisions(ready=False)
    if needs_readiness:
        with pytest.raises(UnsafeFlip, match="readiness fails"):
            await gate.check_flip("users", old, new)
    else:
        await gate.check_flip("users", old, new)
    assert (readiness.asked == ["users"]) is needs_readiness


async def test_a_ready_target_may_flip_and_routes_are_gated_too() -> None:
    gate, _ = decisions(ready=True)
    await gate.check_flip("users", res("postgres"), res("dynamodb"))
    closed, _ = decisions(ready=False)
    old = RouteFlagState("legacy", "candidate", 1.0)
    new = RouteFlagState("candidate", "legacy", 1.0)
    with pytest.raises(UnsafeFlip, match="r: readiness fails"):
        await closed.check_flip("r", old, new)
    await closed.check_flip("r", old, RouteFlagState("legacy", "candidate", 0.5))
    await closed.check_flip("unknown", old, new)  # not a shadowed target: nothing to gate
