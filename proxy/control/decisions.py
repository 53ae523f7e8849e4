"""Flip decisions: readiness per resource and per route, and the flag store's check that
refuses an unsafe-looking flip unless it is forced with a reason (which the audit keeps):

- moving reads toward the new side (``read_from`` to the new store, a higher
  ``new_store_read_fraction``, a route's ``primary`` to its shadow) needs the read verdict;
- removing the old store (any store but the resource's new store) from ``write_to`` needs the
  stop-old-writes verdict: the read criteria, reads already on the new store, a clean
  full-table verify at most ``readiness.verify_max_age_seconds`` old and an empty repair log
  (``proxy.readiness.verdict``).

A fact the stop-old-writes verdict cannot read (verify results, the repair log's depth) is
unknown, with the reason, so the flip is refused and says why instead of failing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from comparators import EQUAL_ONCE_PARSED, UNJUDGED, Comparison
from proxy.experiment.publish import Experiment
from proxy.flags import FlagSnapshot, FlagState, ResourceFlagState, RouteFlagState, UnsafeFlip
from proxy.readiness import RESOURCE_OPERATIONS, Readiness, Verdict, WriteFacts, refusal
from proxy.readiness.config import PARSED_MATCH
from proxy.readiness.config import UNJUDGED as UNJUDGED_OUTCOME
from proxy.readiness.verify_results import VerifyResults, VerifyResultsError, explain
from proxy.settings import Settings

log = logging.getLogger("shadowproxy.control")


def _readiness_outcome(comparison: Comparison) -> str:
    """The outcome readiness records: its mismatch estimate tells two kinds apart."""
    if comparison is UNJUDGED:
        return UNJUDGED_OUTCOME
    if comparison is EQUAL_ONCE_PARSED:
        return PARSED_MATCH
    return comparison.outcome.value


RepairDepth = Callable[[], Awaitable[int]]
"""``RepairLog.depth``: entries not yet repaired, stuck ones included."""


@dataclass(frozen=True)
class GateTarget:
    name: str
    kind: str  # "resource" | "route"
    new_side: str | None  # the new store (resources) or the new backend (routes)
    operations: tuple[str, ...]


def targets_from(settings: Settings, new_stores: Mapping[str, str | None]) -> dict[str, GateTarget]:
    targets = {}
    for name in settings.resources:
        operations = settings.readiness.operations_for(RESOURCE_OPERATIONS)
        targets[name] = GateTarget(name, "resource", new_stores.get(name), tuple(operations))
    for route in settings.routes:
        if route.shadow is None:
            continue
        routed = set(route.methods)
        shadowed = {m for m in route.shadow_methods if m in routed or "*" in routed} - {"HEAD"}
        operations = tuple(sorted(shadowed)) or ("GET",)
        targets[route.name] = GateTarget(route.name, "route", route.shadow, operations)
    return targets


class Decisions:
    """``flags`` (the live snapshot), ``verify_results`` and ``repair_depth`` feed the
    stop-old-writes verdict; without one, its criterion is unknown (never ready)."""

    def __init__(
        self,
        readiness: Readiness,
        targets: Mapping[str, GateTarget],
        *,
        flags: Callable[[], FlagSnapshot] | None = None,
        verify_results: VerifyResults | None = None,
        repair_depth: RepairDepth | None = None,
    ) -> None:
        self.readiness = readiness
        self.targets = dict(targets)
        self._flags = flags
        self._verify = verify_results
        self._repair_depth = repair_depth

    def record(self, exp: Experiment) -> None:
        """Publisher observer: every comparison feeds the readiness window (with the two
        kinds its mismatch estimate tells apart, ``proxy.readiness.config``)."""
        if exp.route in self.targets:
            self.readiness.record(
                exp.route,
                exp.operation,
                _readiness_outcome(exp.comparison),
                exp.primary_seconds,
                exp.shadow_seconds,
                new_side=exp.new_side,
            )

    async def verdict(self, name: str) -> Verdict:
        """May reads move to the new side?"""
        target = self.targets[name]
        return await self.readiness.evaluate(name, required_operations=target.operations)

    async def write_verdict(self, name: str, *, read_from: str | None = None) -> Verdict:
        """May a resource stop writing to its old store? ``read_from`` defaults to the live
        flag (the gate passes the state the change would leave)."""
        target = self.targets[name]
        if target.kind != "resource":
            raise ValueError(f"{name} is a route: only resources have a stop-old-writes verdict")
        if read_from is None:
            read_from = self._live_read_from(name)
        facts = await self._write_facts(target, read_from)
        return await self.readiness.evaluate_writes(
            name, required_operations=target.operations, facts=facts
        )

    async def check_flip(self, name: str, old: FlagState, new: FlagState) -> None:
        """The flag store's ``check``; raises UnsafeFlip with every unmet criterion."""
        target = self.targets.get(name)
        if target is None:
            return
        if target.new_side is not None and _moves_reads(target, old, new):
            result = await self.verdict(name)
            if not result.ready:
                raise UnsafeFlip(
                    f"{name}: readiness fails ({refusal(result)}); "
                    "flip anyway only with force and a reason"
                )
        stopped = _old_stores_removed(target, old, new)
        if stopped and isinstance(new, ResourceFlagState):
            result = await self.write_verdict(name, read_from=new.read_from)
            if not result.ready:
                raise UnsafeFlip(
                    f"{name}: stopping writes to {', '.join(stopped)} is not safe yet "
                    f"({refusal(result)}); stop them anyway only with force and a reason"
                )

    # --- the facts behind the stop-old-writes verdict --------------------------------------

    def _live_read_from(self, name: str) -> str | None:
        if self._flags is None:
            return None
        state = self._flags().resources.get(name)
        return None if state is None else state.read_from

    async def _write_facts(self, target: GateTarget, read_from: str | None) -> WriteFacts:
        (clean_at, failed, verify_detail), (depth, repair_detail) = await asyncio.gather(
            self._verify_facts(target.name), self._repair_facts()
        )
        return WriteFacts(
            read_from=read_from,
            new_store=target.new_side,
            verify_clean_at=clean_at,
            verify_failed=failed,
            verify_detail=verify_detail,
            repair_depth=depth,
            repair_detail=repair_detail,
        )

    async def _verify_facts(self, name: str) -> tuple[float | None, bool, str]:
        """``(clean_at, the latest verify found differences, why clean_at is None)``."""
        if self._verify is None:
            return None, False, "this process has no verify results store"
        try:
            clean_at = await self._verify.clean_at(name)
            if clean_at is not None:
                return clean_at, False, ""
            latest = await self._verify.last(name)
        except VerifyResultsError as e:  # names the file or key and what is wrong with it
            log.warning(
                "verify results could not be read", extra={"resource": name, "error": str(e)}
            )
            return None, False, str(e)
        except Exception as e:
            log.exception("verify results could not be read", extra={"resource": name})
            return None, False, f"verify results could not be read: {type(e).__name__}: {e}"
        return None, any(not r.clean for r in latest), explain(latest)

    async def _repair_facts(self) -> tuple[int | None, str]:
        if self._repair_depth is None:
            return None, "this process has no repair log"
        try:
            return await self._repair_depth(), ""
        except Exception as e:
            log.warning(
                "repair log depth could not be read", extra={"error": f"{type(e).__name__}: {e}"}
            )
            return None, f"the repair log could not be read: {type(e).__name__}: {e}"


def _moves_reads(target: GateTarget, old: FlagState, new: FlagState) -> bool:
    if isinstance(old, ResourceFlagState) and isinstance(new, ResourceFlagState):
        to_new = new.read_from == target.new_side and old.read_from != target.new_side
        return to_new or new.new_store_read_fraction > old.new_store_read_fraction
    if isinstance(old, RouteFlagState) and isinstance(new, RouteFlagState):
        return new.primary == target.new_side and old.primary != target.new_side
    return False


def _old_stores_removed(target: GateTarget, old: FlagState, new: FlagState) -> list[str]:
    """Stores other than the new one that ``new`` no longer writes to (with no known new
    store, every store removed)."""
    if not (isinstance(old, ResourceFlagState) and isinstance(new, ResourceFlagState)):
        return []
    removed = set(old.write_to) - set(new.write_to)
    return sorted(s for s in removed if s != target.new_side)
