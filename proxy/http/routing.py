"""Route patterns (``/users/{id}``, ``/users/*``, ``/*``) compiled once, matched in order."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """``{name}`` is one path segment; a trailing ``*`` is the rest of the path (maybe empty)."""
    if not pattern.startswith("/"):
        raise ValueError(f"route path {pattern!r} must start with '/'")
    tail = pattern.endswith("*")
    body = pattern[:-1] if tail else pattern
    if "*" in body:
        raise ValueError(f"route path {pattern!r}: '*' is allowed only at the end")
    out, pos = [], 0
    for m in _PARAM.finditer(body):
        out.append(re.escape(body[pos : m.start()]))
        out.append(f"(?P<{m.group(1)}>[^/]+)")
        pos = m.end()
    out.append(re.escape(body[pos:]))
    regex = "".join(out) + (".*" if tail else "")
    return re.compile(regex)


@dataclass(frozen=True, slots=True)
class Compiled(Generic[T]):
    regex: re.Pattern[str]
    methods: frozenset[str]
    target: T


class Router(Generic[T]):
    def __init__(self, entries: Sequence[tuple[str, Sequence[str], T]]) -> None:
        self._entries = tuple(
            Compiled(compile_pattern(path), frozenset(methods), target)
            for path, methods, target in entries
        )

    def match(self, method: str, path: str) -> tuple[T | None, bool]:
        """(target, path_matched): the first route whose path and method match.

        ``path_matched`` tells a 405 (some route has the path) from a 404.
        """
        path_matched = False
        for entry in self._entries:
            if entry.regex.fullmatch(path) is None:
                continue
            if method in entry.methods or "*" in entry.methods:
                return entry.target, True
            path_matched = True
        return None, path_matched
