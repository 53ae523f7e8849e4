"""Which flips need readiness, and how a refusal reads: the read flip, and the last flip
(removing the old store from ``write_to``) against verify results in a real file and a
memory repair log."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from proxy.control.decisions import Decisions, GateTarget
from proxy.flags import FlagSnapshot, ResourceFlagState, RouteFlagState, UnsafeFlip
from proxy.readiness import ReadinessConfig, WindowTotals, verdict, write_verdict
from proxy.readiness.verify_results import FileVerifyResults, VerifyResult
from proxy.repair.memory_log import MemoryRepairLog


class FakeReadiness:
    def __init__(self, ready: bool) -> None:
        counts = {("get", "match"): 5000} if ready else {}
        now = time.time()
        self.totals = WindowTotals.build(
            "users", counts, new_seconds=[0.001] * 10, start=now - 3600, end=now
        )
        self.asked: list[str] = []
        self.config = ReadinessConfig()

    async def evaluate(self, target: str, *, required_operations: Any) -> Any:
        self.asked.append(target)
        return verdict(self.totals, self.config, required_operations=required_operations)

    async def evaluate_writes(self, target: str, *, required_operations: Any, facts: Any) -> Any:
        self.asked.append(f"{target}:writes")
        return write_verdict(
            self.totals, self.config, required_operations=required_operations, facts=facts
        )


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
    # none of these removes a store from write_to: the stop-old-writes verdict is not asked


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


# --- the last flip: stop writing the old store ----------------------------------------------


def clean_verify(at: float, **counts: int) -> VerifyResult:
    return VerifyResult("users", "postgres", "dynamodb", 0, 1, at, at + 5, 10, 10,
                        counts.get("missing", 0), 0, counts.get("differing", 0))  # fmt: skip


def writes(read_from: str, *stores: str) -> ResourceFlagState:
    return ResourceFlagState(read_from, stores, 1.0)


def both(read_from: str = "dynamodb") -> ResourceFlagState:
    return writes(read_from, "postgres", "dynamodb")


def only_new() -> ResourceFlagState:
    return writes("dynamodb", "dynamodb")


def last_flip_gate(
    tmp_path: Path, *, ready: bool, repair: MemoryRepairLog | None = None
) -> tuple[Decisions, FileVerifyResults, MemoryRepairLog]:
    readiness = FakeReadiness(ready)
    repair = repair or MemoryRepairLog()
    results = FileVerifyResults(tmp_path / "verify-results.json")
    snapshot = FlagSnapshot(3, {"users": both()}, {})
    gate = Decisions(
        readiness,  # type: ignore[arg-type]
        {"users": GateTarget("users", "resource", "dynamodb", ("get",))},
        flags=lambda: snapshot,
        verify_results=results,
        repair_depth=repair.depth,
    )
    return gate, results, repair


async def test_the_last_flip_is_refused_with_every_unmet_criterion(tmp_path: Path) -> None:
    gate, _, repair = last_flip_gate(tmp_path, ready=False)
    await repair.append("users", "k1", "dynamodb put: StoreTimeout")
    with pytest.raises(UnsafeFlip) as refused:
        await gate.check_flip("users", both(), only_new())
    message = str(refused.value)
    assert message.startswith("users: stopping writes to postgres is not safe yet (")
    assert "comparisons 0 (needs >= 1000" in message
    assert "verify n/a (needs <= 86400; unknown: no full-table verify has been saved" in message
    assert "repair_log 1 (needs <= 0" in message
    assert "reads_on_new_store" not in message  # reads are on the new store already
    assert message.endswith("stop them anyway only with force and a reason")


async def test_the_last_flip_needs_reads_on_the_new_store(tmp_path: Path) -> None:
    gate, results, _ = last_flip_gate(tmp_path, ready=True)
    await results.save(clean_verify(time.time() - 60))
    three = writes("postgres", "postgres", "dynamodb", "spare")
    with pytest.raises(UnsafeFlip, match=r"reads_on_new_store postgres \(needs == dynamodb"):
        await gate.check_flip("users", three, both("postgres"))


async def test_the_last_flip_goes_through_when_everything_holds(tmp_path: Path) -> None:
    gate, results, _ = last_flip_gate(tmp_path, ready=True)
    await results.save(clean_verify(time.time() - 60))
    await gate.check_flip("users", both(), only_new())
    # removing the new store (backing out of the migration) is never gated
    closed, _, _ = last_flip_gate(tmp_path / "other", ready=False)
    await closed.check_flip("users", both("postgres"), writes("postgres", "postgres"))


async def test_a_stale_or_dirty_verify_refuses_the_last_flip(tmp_path: Path) -> None:
    gate, results, _ = last_flip_gate(tmp_path, ready=True)
    await results.save(clean_verify(time.time() - 90_000))
    with pytest.raises(UnsafeFlip, match=r"verify 900\d\d \(needs <= 86400; seconds since"):
        await gate.check_flip("users", both(), only_new())
    await results.save(clean_verify(time.time() - 60, differing=2))
    with pytest.raises(UnsafeFlip, match=r"verify n/a \(needs <= 86400; the latest verify found "
                                         r"differences: .*2 differing"):  # fmt: skip
        await gate.check_flip("users", both(), only_new())


async def test_a_corrupt_results_file_is_unknown_and_says_why(tmp_path: Path) -> None:
    gate, results, _ = last_flip_gate(tmp_path, ready=True)
    results.path.write_text("{oops")
    with pytest.raises(UnsafeFlip) as refused:
        await gate.check_flip("users", both(), only_new())
    assert "verify n/a (needs <= 86400; unknown: verify results file " in str(refused.value)
    assert str(results.path) in str(refused.value)
    verdict = await gate.write_verdict("users")  # GET /readiness: the same, no exception
    assert [c.name for c in verdict.failing] == ["verify"]


async def test_a_failing_repair_log_is_unknown_and_says_why(tmp_path: Path) -> None:
    async def broken() -> int:
        raise ConnectionError("Redis at 127.0.0.1:1 refused the connection")

    readiness = FakeReadiness(True)
    results = FileVerifyResults(tmp_path / "v.json")
    await results.save(clean_verify(time.time() - 1))
    gate = Decisions(
        readiness,  # type: ignore[arg-type]
        {"users": GateTarget("users", "resource", "dynamodb", ("get",))},
        verify_results=results,
        repair_depth=broken,
    )
    with pytest.raises(UnsafeFlip, match=r"repair_log n/a .*ConnectionError: Redis at"):
        await gate.check_flip("users", both(), only_new())
    shown = await gate.write_verdict("users")  # no flags source: read_from unknown
    assert {c.name for c in shown.failing} == {"repair_log", "reads_on_new_store"}
