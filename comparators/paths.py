"""Path syntax: rendering reported paths, parsing rule patterns, collapsing indexes.

A reported path is dotted with bracketed list positions::

    items[3].email            list index
    items[id=42].email        element of a keyed list (key value as canonical JSON)
    items[id="a-1"].email     ... with a string key
    items[id=42#2].email      ... second element carrying the same key
    items[id=?].email         ... element without the key field
    tags[]                    an element of an unordered list or set (no position: the
                              difference's value says which element)
    meta["a.b"]               dict key that is not a plain name (JSON-quoted)
    $                         the root itself (``body`` when prefixed)

A pattern uses the same syntax plus two wildcards: ``*`` matches one dict key, one list index
or one keyed element; ``[*]`` matches one list index or one keyed element.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import orjson

from comparators.errors import RuleError

ROOT = "$"

_PLAIN_KEY = re.compile(r'[^.\[\]"*\s=]+')
_KEY_FIELD = re.compile(r'[^.\[\]"*\s=#]+')
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_COLLAPSIBLE = re.compile(
    r"(?P<name>\["
    + _QUOTED
    + r"\])|\[(?:\d+|"
    + _KEY_FIELD.pattern
    + r"=(?:"
    + _QUOTED
    + r'(?:#\d+)?|[^\]"]*))\]'
)
_PATTERN_TOKEN = re.compile(
    r"(?P<dot>\.)|(?P<any_index>\[\*\])|\[(?P<index>\d+)\]|\[(?P<quoted>"
    + _QUOTED
    + r")\]|(?P<any>\*)|(?P<key>"
    + _PLAIN_KEY.pattern
    + r")"
)
_PATH_TOKEN = re.compile(
    r"(?P<dot>\.)|(?P<member>\[\])|\[(?P<index>\d+)\]|\[(?P<quoted>"
    + _QUOTED
    + r")\]|\[(?P<field>"
    + _KEY_FIELD.pattern
    + r")=(?P<text>"
    + _QUOTED
    + r'(?:#\d+)?|[^\]"]*)\]|(?P<key>[^.\[\]"\s]+)'
)


@dataclass(frozen=True, slots=True)
class Keyed:
    """Path segment of an element of a keyed list: ``[field=text]``."""

    field: str
    text: str


@dataclass(frozen=True, slots=True)
class Member:
    """Path segment of an element of an unordered list or set: ``[]``. It has no position
    (a multiset's elements have none) and never names the element: an element value in a
    path would be a metric label value and would escape redaction."""


MEMBER = Member()

Segment = str | int | Keyed | Member


class Wildcard(Enum):
    ANY = "*"
    ANY_INDEX = "[*]"


@dataclass(frozen=True, slots=True)
class Index:
    value: int


PatternSegment = str | Index | Wildcard


def is_key_field(name: str) -> bool:
    """Whether ``name`` can be the key field of a keyed list (it appears inside brackets)."""
    return _KEY_FIELD.fullmatch(name) is not None


def render_path(prefix: str, segments: Sequence[Segment]) -> str:
    """``render_path("body", ["items", 3, "a"])`` -> ``body.items[3].a``."""
    out = prefix
    for seg in segments:
        if isinstance(seg, str):
            if _PLAIN_KEY.fullmatch(seg):
                out = f"{out}.{seg}" if out else seg
            else:
                out = f"{out}[{orjson.dumps(seg).decode()}]"
        elif isinstance(seg, int):
            out = f"{out}[{seg}]"
        elif isinstance(seg, Member):
            out = f"{out}[]"
        else:
            out = f"{out}[{seg.field}={seg.text}]"
    return out or ROOT


def collapse_indexes(path: str) -> str:
    """Drop list positions so metric labels stay bounded.

    ``items[3].a`` -> ``items[].a``; ``items[id=42].a`` -> ``items[].a``; quoted keys such as
    ``meta["a.b"]`` are names, not positions, and stay.
    """
    if "[" not in path:
        return path
    return _COLLAPSIBLE.sub(_collapse, path)


def _collapse(match: re.Match[str]) -> str:
    return match[0] if match["name"] else "[]"


def parse_pattern(pattern: str) -> tuple[PatternSegment, ...]:
    """Parse a rule pattern such as ``items[*].updated_at``; raise RuleError naming it."""
    if not isinstance(pattern, str) or not pattern:
        raise RuleError(f"bad path pattern {pattern!r}: must be a non-empty string")
    segments: list[PatternSegment] = []
    previous = "start"
    pos = 0
    while pos < len(pattern):
        match = _PATTERN_TOKEN.match(pattern, pos)
        if match is None:
            raise _pattern_error(pattern, pos, f"unexpected {pattern[pos]!r}")
        kind = match.lastgroup
        if kind == "dot":
            if previous in ("start", "dot"):
                raise _pattern_error(pattern, pos, "empty segment")
        elif kind in ("key", "any"):
            if previous not in ("start", "dot"):
                raise _pattern_error(pattern, pos, "expected '.' or '['")
            segments.append(match["key"] if kind == "key" else Wildcard.ANY)
        else:
            if previous == "dot":
                raise _pattern_error(pattern, pos, "'[' right after '.'")
            segments.append(_bracket(pattern, pos, match))
        previous = "dot" if kind == "dot" else "segment"
        pos = match.end()
    if previous == "dot":
        raise _pattern_error(pattern, pos, "trailing '.'")
    return tuple(segments)


def parse_path(path: str) -> list[Segment]:
    """Inverse of :func:`render_path` with an empty prefix; raise ValueError on bad input."""
    segments: list[Segment] = []
    pos = 0
    while pos < len(path):
        match = _PATH_TOKEN.match(path, pos)
        if match is None:
            raise ValueError(f"bad path {path!r} at {pos}")
        kind = match.lastgroup
        if kind == "index":
            segments.append(int(match["index"]))
        elif kind == "quoted":
            segments.append(str(orjson.loads(match["quoted"])))
        elif kind == "text":
            segments.append(Keyed(match["field"], match["text"]))
        elif kind == "key":
            segments.append(match["key"])
        elif kind == "member":
            segments.append(MEMBER)
        pos = match.end()
    return segments


def _bracket(pattern: str, pos: int, match: re.Match[str]) -> PatternSegment:
    if match.lastgroup == "any_index":
        return Wildcard.ANY_INDEX
    if match.lastgroup == "index":
        return Index(int(match["index"]))
    try:
        return str(orjson.loads(match["quoted"]))
    except orjson.JSONDecodeError as e:
        raise _pattern_error(pattern, pos, "bad quoted key") from e


def _pattern_error(pattern: str, pos: int, reason: str) -> RuleError:
    return RuleError(f"bad path pattern {pattern!r}: {reason} at position {pos}")
