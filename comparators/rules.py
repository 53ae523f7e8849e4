"""Comparison rules: the plain spec from config, compiled once into :class:`Rules`.

Usage::

    rules = compile_rules(RuleSpec(ignore=("updated_at", "items[*].etag"), unordered=("tags",)))
    comparison = compare(primary_record, shadow_record, rules)

Patterns are relative to the compared value's root (for HTTP, the JSON body's root).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from comparators.errors import RuleError
from comparators.normalize import UNORDERED, Normalizer, PruneIgnored, ReshapeLists
from comparators.paths import PatternSegment, is_key_field, parse_pattern
from comparators.patterns import States, TrieBuilder

DEFAULT_MAX_DIFF_BYTES = 256 * 1024
DEFAULT_MAX_DIFFERENCES = 100


@dataclass(frozen=True)
class RuleSpec:
    """Rules as they come from config (plain data, validated by :func:`compile_rules`).

    - ``ignore``: path patterns removed from both sides before comparing.
    - ``numeric_tolerance`` / ``numeric_tolerances``: absolute tolerance for numbers, globally
      and per path pattern (the most specific pattern wins, then the last listed).
    - ``timestamp_tolerance_seconds`` / ``timestamp_tolerances``: two ISO-8601 strings are
      compared as instants within this many seconds. Strings are only read as instants where
      a tolerance applies: globally when the global one is > 0, or under a per-path pattern
      (``0`` there means "same instant, any notation"). ``datetime`` values always are.
    - ``unordered``: lists compared as multisets. ``keyed``: lists of objects matched by a key
      field (pattern -> field), reported as ``items[id=42].name``.
    - ``compare_status``, ``headers``: what of an HTTP response is compared besides the body.
    - ``compare_server_errors``: when false (the default), a 5xx answer is not compared: a
      primary 5xx is ``primary_error``, a shadow 5xx against a primary below 500 is
      ``shadow_error``, so an outage never counts as a mismatch.
    - ``max_diff_bytes``: canonical size above which no structured diff is computed.
    - ``max_differences``: differences reported at most (the rest are counted in ``detail``).
    """

    ignore: tuple[str, ...] = ()
    numeric_tolerance: float = 0.0
    numeric_tolerances: Mapping[str, float] = field(default_factory=dict)
    timestamp_tolerance_seconds: float = 0.0
    timestamp_tolerances: Mapping[str, float] = field(default_factory=dict)
    unordered: tuple[str, ...] = ()
    keyed: Mapping[str, str] = field(default_factory=dict)
    compare_status: bool = True
    headers: tuple[str, ...] = ()
    compare_server_errors: bool = False
    max_diff_bytes: int = DEFAULT_MAX_DIFF_BYTES
    max_differences: int = DEFAULT_MAX_DIFFERENCES


@dataclass(frozen=True, slots=True, eq=False)
class Rules:
    """Compiled rules; build with :func:`compile_rules`, share freely, never mutate.

    Compared and hashed by identity (the spec may hold dicts).
    """

    spec: RuleSpec
    normalisers: tuple[Normalizer, ...]
    tolerance_states: States
    numeric_tolerance: float
    timestamp_tolerance: float | None
    has_tolerances: bool
    compare_status: bool
    headers: tuple[str, ...]
    compare_server_errors: bool
    max_diff_bytes: int
    max_differences: int

    def normalise(self, value: Any) -> Any:
        for normaliser in self.normalisers:
            value = normaliser(value)
        return value


def compile_rules(spec: RuleSpec) -> Rules:
    """Validate ``spec`` and compile it; raise :class:`RuleError` naming the bad setting."""
    if not isinstance(spec, RuleSpec):
        raise RuleError(f"expected a RuleSpec, got {type(spec).__name__}")
    numeric = _tolerance("numeric_tolerance", spec.numeric_tolerance)
    timestamp = _tolerance("timestamp_tolerance_seconds", spec.timestamp_tolerance_seconds)
    tolerances = TrieBuilder()
    for setting, tag in (("numeric_tolerances", "numeric"), ("timestamp_tolerances", "timestamp")):
        for pattern, value in _mapping(setting, getattr(spec, setting)).items():
            tolerances.add(_pattern(setting, pattern), tag, _tolerance(setting, value))
    states = tolerances.states()
    return Rules(
        spec=spec,
        normalisers=_normalisers(spec),
        tolerance_states=states,
        numeric_tolerance=numeric,
        timestamp_tolerance=timestamp if timestamp > 0 else None,
        has_tolerances=numeric > 0 or timestamp > 0 or bool(states),
        compare_status=_flag("compare_status", spec.compare_status),
        headers=_headers(spec.headers),
        compare_server_errors=_flag("compare_server_errors", spec.compare_server_errors),
        max_diff_bytes=_positive("max_diff_bytes", spec.max_diff_bytes),
        max_differences=_positive("max_differences", spec.max_differences),
    )


def _normalisers(spec: RuleSpec) -> tuple[Normalizer, ...]:
    out: list[Normalizer] = []
    ignore = TrieBuilder()
    for pattern in _patterns("ignore", spec.ignore):
        ignore.add(_pattern("ignore", pattern), "ignore", True)
    if ignore.states():
        out.append(PruneIgnored(ignore.states()))
    shapes = TrieBuilder()
    unordered = {_pattern("unordered", p): p for p in _patterns("unordered", spec.unordered)}
    for segments in unordered:
        shapes.add(segments, "shape", UNORDERED)
    for pattern, key_field in _mapping("keyed", spec.keyed).items():
        segments = _pattern("keyed", pattern)
        if segments in unordered:
            raise RuleError(f"keyed: pattern {pattern!r} is also listed as unordered")
        if not isinstance(key_field, str) or not is_key_field(key_field):
            raise RuleError(f"keyed: bad key field {key_field!r} for pattern {pattern!r}")
        shapes.add(segments, "shape", key_field)
    if shapes.states():
        out.append(ReshapeLists(shapes.states()))
    return tuple(out)


def _pattern(setting: str, pattern: Any) -> tuple[PatternSegment, ...]:
    try:
        return parse_pattern(pattern)
    except RuleError as e:
        raise RuleError(f"{setting}: {e}") from e


def _patterns(setting: str, value: Any, what: str = "path patterns") -> tuple[Any, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, tuple | list | frozenset):
        raise RuleError(f"{setting}: expected a list of {what}, got {value!r}")
    return tuple(value)


def _mapping(setting: str, value: Any) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise RuleError(f"{setting}: expected a mapping of path pattern -> value, got {value!r}")
    return value


def _tolerance(setting: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RuleError(f"{setting}: expected a number >= 0, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise RuleError(f"{setting}: expected a finite number >= 0, got {value!r}")
    return float(value)


def _positive(setting: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RuleError(f"{setting}: expected an integer >= 1, got {value!r}")
    return value


def _flag(setting: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise RuleError(f"{setting}: expected true or false, got {value!r}")
    return value


def _headers(value: Any) -> tuple[str, ...]:
    names = _patterns("headers", value, "header names")
    for name in names:
        if not isinstance(name, str) or not name or any(c in name for c in ' :\t\r\n"'):
            raise RuleError(f"headers: bad header name {name!r}")
    return tuple(dict.fromkeys(name.lower() for name in names))
