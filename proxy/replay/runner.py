"""Run cases against the sides they need, a few at a time: replay (both sides now, or every
side against a corpus's recorded answer) and export (the primary's answer, for a corpus)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from comparators import Redactor
from proxy.replay.corpus import case_line
from proxy.replay.http_side import HttpSide
from proxy.replay.model import Case, Result, Verdict
from proxy.replay.store_side import StoreSide
from proxy.settings import Settings

T = TypeVar("T")


@dataclass(frozen=True)
class Sides:
    http: HttpSide | None
    store: StoreSide | None

    def of(self, case: Case) -> HttpSide | StoreSide:
        side = self.http if case.request.kind == "http" else self.store
        if side is None:  # pragma: no cover - open_sides opened every side a case needs
            raise RuntimeError(f"no {case.request.kind} side opened")
        return side


@asynccontextmanager
async def open_sides(
    settings: Settings, redactor: Redactor, env: Mapping[str, str], cases: Sequence[Case]
) -> AsyncIterator[Sides]:
    """Connect only to what the replayable cases need: their routes' backends, their
    resources' stores."""
    live = [c for c in cases if c.unreplayable is None]
    resources = [c.request.target for c in live if c.request.kind == "store"]
    async with AsyncExitStack() as stack:
        http = None
        if any(c.request.kind == "http" for c in live):
            http = HttpSide(settings, redactor)
            stack.push_async_callback(http.close)
            await http.start()
        store = None
        if resources:
            store = StoreSide(settings, redactor, env)
            stack.push_async_callback(store.close)
            await store.open(resources)
        yield Sides(http, store)


async def _bounded(
    cases: Sequence[Case], concurrency: int, work: Callable[[Case], Awaitable[T]]
) -> list[T]:
    gate = asyncio.Semaphore(concurrency)

    async def one(case: Case) -> T:
        async with gate:
            return await work(case)

    return list(await asyncio.gather(*(one(c) for c in cases)))


async def replay(
    settings: Settings,
    cases: Sequence[Case],
    redactor: Redactor,
    env: Mapping[str, str],
    *,
    concurrency: int,
) -> list[Result]:
    async with open_sides(settings, redactor, env, cases) as sides:

        async def work(case: Case) -> Result:
            if case.unreplayable is not None:
                return Result(case, Verdict.NOT_REPLAYABLE, case.unreplayable)
            return await sides.of(case).replay(case)

        return await _bounded(cases, concurrency, work)


@dataclass(frozen=True)
class Exported:
    lines: list[dict[str, Any]]
    skipped: list[tuple[Case, str]]


async def export(
    settings: Settings,
    cases: Sequence[Case],
    redactor: Redactor,
    env: Mapping[str, str],
    *,
    concurrency: int,
) -> Exported:
    """Each replayable case with the primary's answer now; the others with why not."""
    async with open_sides(settings, redactor, env, cases) as sides:

        async def work(case: Case) -> tuple[Case, dict[str, Any] | None, str]:
            if case.unreplayable is not None:
                return case, None, case.unreplayable
            answer, why = await sides.of(case).answer(case)
            return case, answer, why

        done = await _bounded(cases, concurrency, work)
    lines = [case_line(case, answer) for case, answer, _ in done if answer is not None]
    skipped = [(case, why) for case, answer, why in done if answer is None]
    return Exported(lines, skipped)
