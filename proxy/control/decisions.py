"""Flip decisions: readiness per resource and per route, and the refusal of a flip to the new
side while readiness fails (unless forced with a reason, which the audit keeps)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from proxy.experiment.publish import Experiment
from proxy.flags import FlagState, ResourceFlagState, RouteFlagState, UnsafeFlip
from proxy.readiness import RESOURCE_OPERATIONS, Readiness, Verdict
from proxy.settings import Settings


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
    def __init__(self, readiness: Readiness, targets: Mapping[str, GateTarget]) -> None:
        self.readiness = readiness
        self.targets = dict(targets)

    def record(self, exp: Experiment) -> None:
        """Publisher observer: every comparison feeds the readiness window."""
        if exp.route in self.targets:
            self.readiness.record(
                exp.route,
                exp.operation,
                exp.comparison.outcome.value,
                exp.primary_seconds,
                exp.shadow_seconds,
                new_side=exp.new_side,
            )

    async def verdict(self, name: str) -> Verdict:
        target = self.targets[name]
        return await self.readiness.evaluate(name, required_operations=target.operations)

    async def check_flip(self, name: str, old: FlagState, new: FlagState) -> None:
        """The flag store's ``check``: moving reads toward the new side needs readiness."""
        target = self.targets.get(name)
        if target is None or target.new_side is None or not _moves_reads(target, old, new):
            return
        result = await self.verdict(name)
        if result.ready:
            return
        failing = "; ".join(
            f"{c.name}: {c.measured} (limit {c.threshold})"
            for c in result.criteria
            if c.passed is not True
        )
        raise UnsafeFlip(
            f"{name}: readiness fails ({failing}); flip anyway only with force and a reason"
        )


def _moves_reads(target: GateTarget, old: FlagState, new: FlagState) -> bool:
    if isinstance(old, ResourceFlagState) and isinstance(new, ResourceFlagState):
        to_new = new.read_from == target.new_side and old.read_from != target.new_side
        return to_new or new.new_store_read_fraction > old.new_store_read_fraction
    if isinstance(old, RouteFlagState) and isinstance(new, RouteFlagState):
        return new.primary == target.new_side and old.primary != target.new_side
    return False
