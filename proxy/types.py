"""The project's vocabulary: aliases and protocols only, no behaviour."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from comparators.model import Comparison, HttpSnapshot

JSONValue = Any
Record = dict[str, Any]
Clock = Callable[[], float]


class MismatchSink(Protocol):
    """Where redacted mismatch records go (JSONL file, Redis stream)."""

    async def write(self, record: Mapping[str, Any]) -> None: ...

    async def recent(self, limit: int) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...


class ComparisonHook(Protocol):
    """Called once per finished shadow comparison; must never raise into the caller."""

    def __call__(self, route: str, comparison: Comparison) -> None: ...


ShadowCall = Callable[[], Awaitable[HttpSnapshot]]
