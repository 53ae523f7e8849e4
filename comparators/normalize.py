"""Normalisers: small callables compiled once from rules, applied to each side in order.

Each walks only where a pattern can still match (see ``comparators.patterns``) and copies
only what it changes, so a rule about ``meta.etag`` costs two dict lookups on a 1 KB record.
The input is never mutated.

- :class:`PruneIgnored` removes ignored dict keys and replaces ignored list elements with
  ``IGNORED`` (so later positions keep their index; the differ skips it).
- :class:`ReshapeLists` turns unordered lists into an :class:`UnorderedList` sorted by
  canonical bytes and keyed lists into :class:`KeyedItems` (key text -> element), so both
  compare the same whatever the order, and canonical bytes stay a valid fast path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from uuid import UUID

from comparators.canonical import canonical
from comparators.markers import IGNORED, Drifted, KeyedItems, UnorderedList
from comparators.patterns import (
    States,
    best,
    index_candidates,
    key_candidates,
    matches,
    step_index,
    step_item,
    step_key,
)

Normalizer = Callable[[Any], Any]

UNORDERED = "unordered"
MISSING_KEY = "?"
_SCALAR_KEYS = (str, int, float, Decimal, UUID)


class PruneIgnored:
    __slots__ = ("_states",)

    def __init__(self, states: States) -> None:
        self._states = states

    def __call__(self, value: Any) -> Any:
        return _prune(value, self._states)


class ReshapeLists:
    __slots__ = ("_states",)

    def __init__(self, states: States) -> None:
        self._states = states

    def __call__(self, value: Any) -> Any:
        return _reshape(value, self._states)


def key_text(value: Any) -> str:
    """How a key value appears in paths: canonical JSON of a scalar, else ``?``. A float key
    is written as the Decimal of its shortest repr, so ``0.0`` and a store's ``Decimal("0.0")``
    (or ``1e20`` and ``100000000000000000000``) name the same element."""
    if isinstance(value, float) and math.isfinite(value):
        value = Decimal(repr(value))
    if value is None or isinstance(value, _SCALAR_KEYS):
        return canonical(value).decode()
    return MISSING_KEY


def keyed(items: list[Any] | tuple[Any, ...], field: str) -> KeyedItems:
    """Index ``items`` by ``field``; repeats get ``#2``, ``#3``...; keyless ones ``?``."""
    out = KeyedItems(field)
    seen: dict[str, int] = {}
    for item in items:
        text = key_text(item.get(field, ...)) if isinstance(item, dict) else MISSING_KEY
        count = seen.get(text, 0) + 1
        seen[text] = count
        out[f"{text}#{count}" if count > 1 else text] = item
    return out


def to_plain(value: Any) -> Any:
    """Undo the reshaping for reporting: keyed items back to a list, containers to builtins,
    a drifted value to ``{"malformed": raw, "reason": reason}`` (a redactor walks it)."""
    if value is IGNORED:
        return repr(IGNORED)
    if isinstance(value, Drifted):
        return {"malformed": to_plain(value.raw), "reason": value.reason}
    if isinstance(value, KeyedItems):
        return [to_plain(v) for v in value.values()]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    return value


def _prune(value: Any, states: States) -> Any:
    if isinstance(value, dict):
        return _prune_dict(value, states)
    if isinstance(value, list | tuple):
        return _prune_list(value, states)
    return value


def _prune_dict(value: dict[Any, Any], states: States) -> Any:
    item_states = step_item(states) if isinstance(value, KeyedItems) else None
    if item_states == ():
        return value
    candidates = None if item_states is not None else key_candidates(states)
    keys = value.keys() if candidates is None else [k for k in candidates if k in value]
    dropped: set[Any] = set()
    replaced: dict[Any, Any] = {}
    for key in keys:
        child = step_key(states, key) if item_states is None else item_states
        if matches(child, "ignore"):
            if item_states is None:
                dropped.add(key)
            elif value[key] is not IGNORED:  # a list element: marked, as in _prune_list
                replaced[key] = IGNORED
            continue
        new = _prune(value[key], child)
        if new is not value[key]:
            replaced[key] = new
    if not dropped and not replaced:
        return value
    out: dict[Any, Any] = KeyedItems(value.field) if isinstance(value, KeyedItems) else {}
    out.update(value)
    for key in dropped:
        del out[key]
    out.update(replaced)
    return out


def _prune_list(value: list[Any] | tuple[Any, ...], states: States) -> Any:
    replaced: dict[int, Any] = {}
    unordered = isinstance(value, UnorderedList)
    item_states = step_item(states) if unordered else None
    positions = range(len(value)) if unordered else index_candidates(states, len(value))
    for i in positions:
        child = step_index(states, i) if item_states is None else item_states
        item = value[i]
        if matches(child, "ignore"):
            if item is not IGNORED:
                replaced[i] = IGNORED
        elif child:
            new = _prune(item, child)
            if new is not item:
                replaced[i] = new
    if not replaced:
        return value
    out = [replaced.get(i, item) for i, item in enumerate(value)]
    return UnorderedList(sorted(out, key=canonical)) if isinstance(value, UnorderedList) else out


def _reshape(value: Any, states: States) -> Any:
    if isinstance(value, dict):
        return _reshape_dict(value, states)
    if isinstance(value, list | tuple):
        shape = UNORDERED if isinstance(value, UnorderedList) else best(states, "shape")
        # In a list compared without order a position means nothing: its elements are all
        # reshaped alike (as they will be again once sorted), so normalising is idempotent.
        items = _reshape_items(value, states, positional=shape is None)
        if shape is None or (items is value and isinstance(value, UnorderedList)):
            return items
        if shape == UNORDERED:
            return UnorderedList(sorted(items, key=canonical))
        return keyed(items, shape)
    return value


def _reshape_dict(value: dict[Any, Any], states: States) -> Any:
    if isinstance(value, KeyedItems):
        return value
    candidates = key_candidates(states)
    keys = value.keys() if candidates is None else [k for k in candidates if k in value]
    replaced: dict[Any, Any] = {}
    for key in keys:
        child = step_key(states, key)
        if child:
            new = _reshape(value[key], child)
            if new is not value[key]:
                replaced[key] = new
    if not replaced:
        return value
    return {key: replaced.get(key, item) for key, item in value.items()}


def _reshape_items(
    value: list[Any] | tuple[Any, ...], states: States, *, positional: bool = True
) -> Any:
    replaced: dict[int, Any] = {}
    item_states = None if positional else step_item(states)
    positions = index_candidates(states, len(value)) if positional else range(len(value))
    for i in positions:
        child = step_index(states, i) if item_states is None else item_states
        if child:
            new = _reshape(value[i], child)
            if new is not value[i]:
                replaced[i] = new
    if not replaced:
        return value
    return [replaced.get(i, item) for i, item in enumerate(value)]
