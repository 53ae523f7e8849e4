"""Compiled path patterns: a trie walked alongside the data.

A walker holds the tuple of trie nodes its current path has reached (``States``); an empty
tuple means no pattern can match below, so the walker stops looking there. Each node carries
the payloads of the patterns ending at it, keyed by a tag (``"ignore"``, ``"shape"``,
``"numeric"``, ``"timestamp"``), each with a rank so the most specific pattern wins.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from comparators.paths import Index, PatternSegment, Wildcard

Rank = tuple[int, int]


class Node:
    __slots__ = ("any", "any_index", "indexes", "keys", "payloads")

    def __init__(self) -> None:
        self.keys: dict[str, Node] = {}
        self.indexes: dict[int, Node] = {}
        self.any_index: Node | None = None
        self.any: Node | None = None
        self.payloads: dict[str, tuple[Rank, Any]] = {}


States = tuple[Node, ...]


class TrieBuilder:
    """Collects patterns; ``states()`` gives the walker's starting point."""

    def __init__(self) -> None:
        self._root = Node()
        self._count = 0

    def add(self, segments: tuple[PatternSegment, ...], tag: str, payload: Any) -> None:
        """Insert a parsed pattern; among equally specific patterns the last added wins."""
        node = self._root
        for seg in segments:
            node = _child(node, seg)
        self._count += 1
        specificity = sum(not isinstance(s, Wildcard) for s in segments)
        node.payloads[tag] = ((specificity, self._count), payload)

    def states(self) -> States:
        return (self._root,) if self._count else ()


def step_key(states: States, key: object) -> States:
    out: list[Node] = []
    for node in states:
        child = node.keys.get(key) if isinstance(key, str) else None
        if child is not None:
            out.append(child)
        if node.any is not None:
            out.append(node.any)
    return tuple(out)


def step_index(states: States, index: int) -> States:
    out: list[Node] = []
    for node in states:
        child = node.indexes.get(index)
        if child is not None:
            out.append(child)
        if node.any_index is not None:
            out.append(node.any_index)
        if node.any is not None:
            out.append(node.any)
    return tuple(out)


def step_item(states: States) -> States:
    """Step into an element whose position means nothing (keyed or unordered list)."""
    out: list[Node] = []
    for node in states:
        if node.any_index is not None:
            out.append(node.any_index)
        if node.any is not None:
            out.append(node.any)
    return tuple(out)


def best(states: States, tag: str) -> Any:
    """Payload of the most specific pattern with ``tag`` ending here, or None."""
    found: tuple[Rank, Any] | None = None
    for node in states:
        entry = node.payloads.get(tag)
        if entry is not None and (found is None or entry[0] > found[0]):
            found = entry
    return None if found is None else found[1]


def matches(states: States, tag: str) -> bool:
    # a loop, not any(<generator>): this runs per visited key and the generator costs 3x
    for node in states:  # noqa: SIM110
        if tag in node.payloads:
            return True
    return False


def key_candidates(states: States) -> Collection[str] | None:
    """Dict keys worth visiting, or None when a wildcard means every key."""
    if len(states) == 1:
        node = states[0]
        return None if node.any is not None else node.keys.keys()
    keys: set[str] = set()
    for node in states:
        if node.any is not None:
            return None
        keys.update(node.keys)
    return keys


def index_candidates(states: States, length: int) -> range | list[int]:
    """List positions worth visiting."""
    if any(node.any is not None or node.any_index is not None for node in states):
        return range(length)
    return sorted({i for node in states for i in node.indexes if i < length})


def _child(node: Node, seg: PatternSegment) -> Node:
    if seg is Wildcard.ANY:
        node.any = node.any or Node()
        return node.any
    if seg is Wildcard.ANY_INDEX:
        node.any_index = node.any_index or Node()
        return node.any_index
    if isinstance(seg, Index):
        return node.indexes.setdefault(seg.value, Node())
    return node.keys.setdefault(seg, Node())
