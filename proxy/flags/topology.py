"""What the flags may point at: the stores of each resource, the sides of each route.

Built once from config; every flag change is validated against it (an unsafe flip, such as
reading from a store the resource does not have, is refused whatever ``force`` says).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from proxy.flags.model import FlagSnapshot, FlagState, ResourceFlagState, UnknownFlag, validate


@dataclass(frozen=True)
class ResourceTopology:
    """What one resource's flags may name: its declared stores and its migration target."""

    stores: frozenset[str]
    new_store: str | None = None


@dataclass(frozen=True)
class FlagTopology:
    """The names this instance's config declares; every change is validated against it."""

    resources: Mapping[str, ResourceTopology] = field(default_factory=dict)
    backends: frozenset[str] = frozenset()  # HTTP backends a route may name

    @classmethod
    def from_snapshot(cls, snapshot: FlagSnapshot) -> FlagTopology:
        """Only the names ``snapshot`` uses (for tests and config-less use); the new store of
        a resource writing to two stores is the one it does not read from."""
        resources = {}
        for name, state in snapshot.resources.items():
            stores = frozenset((state.read_from, *state.write_to))
            resources[name] = ResourceTopology(stores, infer_new_store(state.read_from, stores))
        backends: set[str] = set()
        for route in snapshot.routes.values():
            backends.add(route.primary)
            if route.shadow is not None:
                backends.add(route.shadow)
        return cls(resources=resources, backends=frozenset(backends))

    def validate(self, target: str, state: FlagState) -> None:
        if isinstance(state, ResourceFlagState):
            resource = self.resources.get(target)
            if resource is None:
                raise UnknownFlag(f"resource {target!r} is not declared in this config")
            validate(
                "resource",
                state,
                stores=resource.stores,
                new_store=resource.new_store,
                backends=(),
                target=target,
            )
        else:
            validate(
                "route", state, stores=(), new_store=None, backends=self.backends, target=target
            )


def infer_new_store(read_from: str, stores: frozenset[str] | set[str]) -> str | None:
    """With exactly two stores, the one not read from is the new one; otherwise unknown."""
    others = sorted(set(stores) - {read_from})
    return others[0] if len(stores) == 2 and len(others) == 1 else None
