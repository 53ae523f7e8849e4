"""The structured differ: walks two normalised values and lists their differences.

A value on one side only (``None`` on the other, at the top) is ``removed`` or ``added``.
Dicts are compared key by key, lists position by position, unordered lists and sets as
multisets (exact matches by canonical bytes first, then the rest paired up by a maximum
matching under the leaf rules, so tolerances apply inside them too), keyed lists by key.
An element of a multiset on one side only is reported at ``tags[]`` (no position: it has
none) as ``removed`` or ``added`` with the element as the value; duplicates count.
A :class:`~comparators.markers.Drifted` value (type drift in a store) is ``type_changed``
against any value that is not drifted, whatever its raw value looks like.
Leaves: numbers within the numeric tolerance, ISO-8601 strings and datetimes as instants within
the timestamp tolerance (see ``RuleSpec``), anything else by canonical bytes.

Whenever canonical bytes are equal the differ finds nothing, so the fast path never disagrees
with it; the converse does not hold (``1`` vs ``1.0``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from comparators.canonical import canonical
from comparators.leaves import instants_equal, numbers_equal, parse_instant
from comparators.markers import IGNORED, Drifted, KeyedItems, UnorderedList
from comparators.model import Difference
from comparators.normalize import to_plain
from comparators.paths import MEMBER, Keyed, Segment, render_path
from comparators.patterns import States, best, step_index, step_item, step_key
from comparators.rules import Rules

MAX_PAIRINGS = 4096
"""Leftover pairs of an unordered list tried under tolerances; above this they are reported."""

_DICT, _KEYED, _LIST, _MULTISET, _NUMBER, _STRING, _BOOL, _NULL, _INSTANT, _DRIFT, _OTHER = range(
    11
)
_KINDS: dict[type, int] = {
    dict: _DICT,
    KeyedItems: _KEYED,
    list: _LIST,
    tuple: _LIST,
    UnorderedList: _MULTISET,
    set: _MULTISET,
    frozenset: _MULTISET,
    int: _NUMBER,
    float: _NUMBER,
    Decimal: _NUMBER,
    str: _STRING,
    bool: _BOOL,
    type(None): _NULL,
    datetime: _INSTANT,
    Drifted: _DRIFT,
}
_SEQUENCES = frozenset((_LIST, _MULTISET))
_PLAIN = frozenset((str, int, float, bool, type(None)))
"""Types for which Python's ``==`` between two values of the same type is ours too."""
_ABSENT: Any = object()


@dataclass(frozen=True, slots=True)
class DiffResult:
    differences: tuple[Difference, ...]
    total: int
    """All differences found, including those beyond ``max_differences``."""


def diff(primary: Any, shadow: Any, rules: Rules, *, prefix: str = "") -> DiffResult:
    """Differences between two values already normalised with ``rules``."""
    differ = _Differ(rules, prefix)
    if (primary is None) != (shadow is None):
        # A whole value on one side only (a record the other store does not have): the
        # value is missing from the shadow (removed) or extra there (added), not a retyping.
        differ._emit("removed" if shadow is None else "added", primary, shadow)
    else:
        differ.walk(primary, shadow, rules.tolerance_states)
    return DiffResult(tuple(differ.out), differ.total)


class _Stop(Exception):
    """A difference was found while only asking whether there is one."""


class _Differ:
    __slots__ = ("_first_only", "_path", "_prefix", "_rules", "out", "total")

    def __init__(self, rules: Rules, prefix: str) -> None:
        self._rules = rules
        self._prefix = prefix
        self._path: list[Segment] = []
        self._first_only = False
        self.out: list[Difference] = []
        self.total = 0

    def walk(self, a: Any, b: Any, states: States) -> None:
        if a is b:
            return
        ka, kb = _kind(a), _kind(b)
        if ka != kb:
            self._mixed(a, b, ka, kb, states)
        elif ka == _DICT:
            self._dict(a, b, states)
        elif ka == _KEYED:
            self._keyed(a, b, states)
        elif ka == _LIST:
            self._list(a, b, states)
        elif ka == _MULTISET:
            self._multiset(a, b, states)
        elif ka == _NUMBER:
            if not numbers_equal(a, b, self._numeric(states)):
                self._emit("changed", a, b)
        elif ka == _STRING:
            self._strings(a, b, states)
        elif ka == _INSTANT:
            if not instants_equal(a, b, self._timestamp(states) or 0.0):
                self._emit("changed", a, b)
        elif ka in (_OTHER, _DRIFT):
            if canonical(a) != canonical(b):
                self._emit("changed", a, b)
        elif a != b:
            self._emit("changed", a, b)

    def _mixed(self, a: Any, b: Any, ka: int, kb: int, states: States) -> None:
        if ka == _DRIFT or kb == _DRIFT:
            # Stored in another type than declared: a difference even where the raw value
            # renders like the other side's (a one-element list against a one-element set).
            self._emit("type_changed", a, b)
            return
        if {ka, kb} == {_INSTANT, _STRING}:
            text, moment = (a, b) if ka == _STRING else (b, a)
            instant = parse_instant(text)
            if instant is not None:
                if not instants_equal(instant, moment, self._timestamp(states) or 0.0):
                    self._emit("changed", a, b)
                return
        if canonical(a) == canonical(b):
            return
        if ka in _SEQUENCES and kb in _SEQUENCES:
            self._multiset(a, b, states)
        else:
            self._emit("type_changed", a, b)

    def _dict(self, a: dict[Any, Any], b: dict[Any, Any], states: States) -> None:
        path = self._path
        for key, va in a.items():
            vb = b.get(key, _ABSENT)
            if va is vb or (type(va) is type(vb) and type(va) in _PLAIN and va == vb):
                continue
            path.append(key if isinstance(key, str) else str(key))
            if vb is _ABSENT:
                self._emit("removed", va, None)
            else:
                self.walk(va, vb, step_key(states, key) if states else states)
            path.pop()
        for key, vb in b.items():
            if key not in a:
                path.append(key if isinstance(key, str) else str(key))
                self._emit("added", None, vb)
                path.pop()

    def _keyed(self, a: KeyedItems, b: KeyedItems, states: States) -> None:
        path = self._path
        child = step_item(states) if states else states
        for key, va in a.items():
            vb = b.get(key, _ABSENT)
            if va is vb:
                continue
            path.append(Keyed(a.field, key))
            if vb is _ABSENT:
                self._emit("removed", va, None)
            else:
                self.walk(va, vb, child)
            path.pop()
        for key, vb in b.items():
            if key not in a:
                path.append(Keyed(b.field, key))
                self._emit("added", None, vb)
                path.pop()

    def _list(
        self, a: list[Any] | tuple[Any, ...], b: list[Any] | tuple[Any, ...], states: States
    ) -> None:
        path = self._path
        common = min(len(a), len(b))
        for i in range(common):
            va, vb = a[i], b[i]
            if va is vb or (type(va) is type(vb) and type(va) in _PLAIN and va == vb):
                continue
            path.append(i)
            self.walk(va, vb, step_index(states, i) if states else states)
            path.pop()
        self._emit_items("removed", a, range(common, len(a)))
        self._emit_items("added", b, range(common, len(b)))

    def _multiset(self, a: Iterable[Any], b: Iterable[Any], states: States) -> None:
        xs = a if isinstance(a, UnorderedList) else sorted(a, key=canonical)
        ys = b if isinstance(b, UnorderedList) else sorted(b, key=canonical)
        pool: dict[bytes, list[int]] = {}
        for j in range(len(ys) - 1, -1, -1):  # so pop() hands out the first index
            pool.setdefault(canonical(ys[j]), []).append(j)
        owner: dict[int, int] = {}
        left_x: list[int] = []
        for i, x in enumerate(xs):
            js = pool.get(canonical(x))
            if js:
                owner[js.pop()] = i
            else:
                left_x.append(i)
        if left_x and len(owner) < len(ys):
            self._pair(xs, ys, owner, left_x, step_item(states))
        paired = set(owner.values())
        self._emit_members("removed", xs, [i for i in left_x if i not in paired])
        self._emit_members("added", ys, [j for j in range(len(ys)) if j not in owner])

    def _pair(
        self, xs: list[Any], ys: list[Any], owner: dict[int, int], left_x: list[int], states: States
    ) -> None:
        """Grow the exact matching ``owner`` (shadow index -> primary index) to a maximum
        matching under the leaf rules (Kuhn's augmenting paths), so a pairing of exact
        matches never hides a pairing within tolerance. Bounded by :data:`MAX_PAIRINGS`:
        beyond it only leftovers are paired with leftovers, or nothing at all."""
        if len(xs) * len(ys) <= MAX_PAIRINGS:
            candidates: list[int] | range = range(len(ys))
        else:
            candidates = [j for j in range(len(ys)) if j not in owner]
            if len(left_x) * len(candidates) > MAX_PAIRINGS:
                return
        edges: dict[int, list[int]] = {}

        def augment(i: int, seen: set[int]) -> bool:
            if i not in edges:
                edges[i] = [j for j in candidates if self._equal(xs[i], ys[j], states)]
            for j in edges[i]:
                if j not in seen:
                    seen.add(j)
                    if j not in owner or augment(owner[j], seen):
                        owner[j] = i
                        return True
            return False

        for i in left_x:
            augment(i, set())

    def _equal(self, a: Any, b: Any, states: States) -> bool:
        first_only, depth = self._first_only, len(self._path)
        self._first_only = True
        try:
            self.walk(a, b, states)
            return True
        except _Stop:
            return False
        finally:
            self._first_only = first_only
            del self._path[depth:]

    def _strings(self, a: str, b: str, states: States) -> None:
        if a == b:
            return
        tolerance = self._timestamp(states)
        if tolerance is not None:
            x, y = parse_instant(a), parse_instant(b)
            if x is not None and y is not None and instants_equal(x, y, tolerance):
                return
        self._emit("changed", a, b)

    def _numeric(self, states: States) -> float:
        value = best(states, "numeric") if states else None
        return self._rules.numeric_tolerance if value is None else float(value)

    def _timestamp(self, states: States) -> float | None:
        value = best(states, "timestamp") if states else None
        return self._rules.timestamp_tolerance if value is None else float(value)

    def _emit_items(self, kind: str, items: Any, indexes: Iterable[int]) -> None:
        path = self._path
        for i in indexes:
            if items[i] is IGNORED:
                continue
            path.append(i)
            if kind == "removed":
                self._emit(kind, items[i], None)
            else:
                self._emit(kind, None, items[i])
            path.pop()

    def _emit_members(self, kind: str, items: Any, indexes: Iterable[int]) -> None:
        """Elements of a multiset on one side only, at ``name[]``: a position in the sorted
        multiset would say nothing, the element (the difference's value) says which."""
        path = self._path
        path.append(MEMBER)
        try:
            for i in indexes:
                if items[i] is IGNORED:
                    continue
                if kind == "removed":
                    self._emit(kind, items[i], None)
                else:
                    self._emit(kind, None, items[i])
        finally:
            path.pop()

    def _emit(self, kind: str, primary: Any, shadow: Any) -> None:
        if self._first_only:
            raise _Stop
        self.total += 1
        if len(self.out) < self._rules.max_differences:
            path = render_path(self._prefix, self._path)
            self.out.append(Difference(path, kind, to_plain(primary), to_plain(shadow)))


def _kind(value: Any) -> int:
    kind = _KINDS.get(type(value))
    return _subclass_kind(value) if kind is None else kind


def _subclass_kind(value: Any) -> int:
    if isinstance(value, int | float | Decimal):
        return _NUMBER
    if isinstance(value, str):
        return _STRING
    if isinstance(value, datetime):
        return _INSTANT
    if isinstance(value, dict):
        return _DICT
    if isinstance(value, set | frozenset):
        return _MULTISET
    if isinstance(value, list | tuple):
        return _LIST
    if isinstance(value, Drifted):
        return _DRIFT
    return _OTHER
