"""HTTP mode: a case re-sent to its route's backends as the config names them (never as a
record does), the answers compared under the route's rules, as the shadow path does."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Any

from multidict import CIMultiDict

from comparators import Comparison, HttpSnapshot, Redactor, Rules, compare_http, compile_rules
from comparators.model import Outcome
from proxy import __version__, h1
from proxy.http.routes import rule_spec
from proxy.http.upstream import HttpUpstream, end_to_end_items, lowered
from proxy.replay.answers import comparable, http_answer, snapshot_of
from proxy.replay.model import Case, Request, Result, Verdict
from proxy.settings import HttpBackend, Route, Settings

Fetched = HttpSnapshot | BaseException


def verdict_of(comparison: Comparison) -> tuple[Verdict, str]:
    outcome = comparison.outcome
    if outcome is Outcome.MATCH:
        return Verdict.FIXED, ""
    if outcome is Outcome.MISMATCH:
        return Verdict.STILL_DIFFERENT, comparison.detail
    if outcome is Outcome.SKIPPED:
        return Verdict.NOT_REPLAYABLE, "an answer is over shadow.body_max_bytes: not compared"
    return Verdict.FAILING, comparison.detail


class HttpSide:
    def __init__(self, settings: Settings, redactor: Redactor) -> None:
        self._routes: dict[str, Route] = {r.name: r for r in settings.routes}
        self._rules: dict[str, Rules] = {
            r.name: compile_rules(rule_spec(r.compare)) for r in settings.routes
        }
        self._upstreams = {
            name: HttpUpstream(name, config)
            for name, config in settings.backends.items()
            if isinstance(config, HttpBackend)
        }
        self._cap = settings.shadow.body_max_bytes
        self._requester_header = settings.requesters.header
        self._redactor = redactor

    async def start(self) -> None:
        for upstream in self._upstreams.values():
            await upstream.start()

    async def close(self) -> None:
        for upstream in self._upstreams.values():
            await upstream.close()

    async def replay(self, case: Case) -> Result:
        route = self._routes[case.request.target]
        if case.answer is not None:
            return await self._against_answer(case, route, case.answer)
        if route.shadow is None:
            return Result(case, Verdict.NOT_REPLAYABLE, f"route {route.name!r} has no shadow")
        primary, shadow = await asyncio.gather(
            self._fetch(route.primary, case.request), self._fetch(route.shadow, case.request)
        )
        sides = {route.primary: _status(primary), route.shadow: _status(shadow)}
        if isinstance(primary, BaseException):
            return Result(case, Verdict.FAILING, _failure(route.primary, primary), sides=sides)
        if isinstance(shadow, BaseException):
            return Result(case, Verdict.FAILING, _failure(route.shadow, shadow), sides=sides)
        comparison = compare_http(primary, shadow, self._rules[route.name])
        verdict, detail = verdict_of(comparison)
        if comparison.outcome is Outcome.PRIMARY_ERROR:
            detail = f"{route.primary} answered {primary.status}"
        elif comparison.outcome is Outcome.SHADOW_ERROR:
            detail = f"{route.shadow} answered {shadow.status}"
        differences = tuple(
            {"path": d.path, "kind": d.kind, "primary": d.primary, "shadow": d.shadow}
            for d in map(self._redactor.difference, comparison.differences)
        )
        return Result(case, verdict, detail, differences, sides)

    async def _against_answer(self, case: Case, route: Route, answer: Mapping[str, Any]) -> Result:
        """A corpus case: each configured backend's answer against the recorded one."""
        recorded = snapshot_of(answer)
        rules = self._rules[route.name]
        names = [n for n in (route.primary, route.shadow) if n is not None]
        fetched = await asyncio.gather(*(self._fetch(n, case.request) for n in names))
        sides = {name: _status(f) for name, f in zip(names, fetched, strict=True)}
        failures, differences, skipped = [], [], []
        for name, live in zip(names, fetched, strict=True):
            if isinstance(live, BaseException):
                failures.append(_failure(name, live))
                continue
            # Both sides redacted alike: the differences hold hashes, never a clear value.
            comparison = compare_http(
                recorded, comparable(live, rules.headers, self._redactor), rules
            )
            verdict, detail = verdict_of(comparison)
            if comparison.outcome is Outcome.SHADOW_ERROR:
                failures.append(f"{name} answered {live.status}")
            elif verdict is Verdict.FAILING:
                failures.append(f"{name}: {detail}")
            elif verdict is Verdict.NOT_REPLAYABLE:
                skipped.append(f"{name}: {detail}")
            for d in comparison.differences:
                differences.append(
                    {"backend": name, "path": d.path, "kind": d.kind,
                     "recorded": d.primary, "now": d.shadow}
                )  # fmt: skip
        return _combined(case, failures, differences, skipped, sides)

    async def answer(self, case: Case) -> tuple[dict[str, Any] | None, str]:
        """The route's primary's answer now, redacted for a corpus; or None and why not."""
        route = self._routes[case.request.target]
        fetched = await self._fetch(route.primary, case.request)
        if isinstance(fetched, BaseException):
            return None, _failure(route.primary, fetched)
        if fetched.body is None:
            return None, f"{route.primary}'s answer is over shadow.body_max_bytes"
        if fetched.status >= 500 and not route.compare.server_errors:
            return None, f"{route.primary} answered {fetched.status}"
        return http_answer(fetched, self._rules[route.name].headers, self._redactor), ""

    async def _fetch(self, backend: str, request: Request) -> Fetched:
        headers: CIMultiDict[str] = CIMultiDict()
        headers["User-Agent"] = f"shadowproxy-replay/{__version__}"
        headers["X-Request-ID"] = f"replay-{uuid.uuid4().hex}"
        if request.requester is not None:
            headers[self._requester_header] = request.requester
        upstream = self._upstreams[backend]
        try:
            lines = h1.header_lines(headers)
            response = await upstream.send(request.method, request.path, lines, None)
            try:
                async with asyncio.timeout_at(response.deadline):
                    body = await h1.read_capped(response, self._cap)
            finally:
                response.release()
        except (TimeoutError, h1.BackendError) as e:
            return e
        return HttpSnapshot(response.status, lowered(end_to_end_items(response.raw_headers)), body)


def _combined(
    case: Case,
    failures: list[str],
    differences: list[dict[str, Any]],
    skipped: list[str],
    sides: dict[str, Any],
) -> Result:
    if failures:
        return Result(case, Verdict.FAILING, "; ".join(failures), tuple(differences), sides)
    if differences:
        return Result(case, Verdict.STILL_DIFFERENT, "", tuple(differences), sides)
    if skipped:
        return Result(case, Verdict.NOT_REPLAYABLE, "; ".join(skipped), (), sides)
    return Result(case, Verdict.FIXED, "", (), sides)


def _status(fetched: Fetched) -> Any:
    return "error" if isinstance(fetched, BaseException) else fetched.status


def _failure(backend: str, error: BaseException) -> str:
    kind = "timeout" if isinstance(error, TimeoutError) else type(error).__name__
    return f"{backend}: {kind}: {error}"[:300]
