"""``GET /readyz`` on the admin port: may this instance take traffic now?

Unauthenticated, like ``/healthz``, and a different question from both ``/healthz`` (is the
process alive: always 200) and the token-guarded ``/readiness`` (is a migration ready to
flip). It answers 200 when

- the process listens: the admin port answers only once the proxy port is open
  (``proxy.serve.listen`` opens the proxy port first, and on shutdown the admin port closes
  first, so a draining instance stops being ready at once);
- the flags are loaded: the flag store has been reachable at least once since start (a
  Redis flag store lost later keeps its last known flags in force, which ``/healthz`` reports
  as ``degraded``: still ready, or a Redis outage would take every instance out of service);
- every store a resource reads from (its live ``read_from``) answers a one-record read.

Stores a resource only writes to besides (the shadow side, repaired from the repair log when
it fails) are checked and reported, but do not make the instance unready: the shadow is never
on the client's path.

The store checks are cached: at most one round of checks a second (``interval_seconds``),
each with a short deadline (``timeout_seconds``), however often the port is probed; probes
arriving during a round wait for it. The body names each check with ``ok``, ``required``
and a short fixed reason, never an error's text (which could carry a DSN or a host).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from proxy.flags.store import FlagStore

INTERVAL_SECONDS = 1.0
TIMEOUT_SECONDS = 1.0

Check = Callable[[], Awaitable[None]]


class _Store(Protocol):
    async def list(
        self, filters: Mapping[str, Any], limit: int, cursor: str | None = None
    ) -> tuple[Any, str | None]: ...


class _Resources(Protocol):
    @property
    def services(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class Probe:
    """One named check: ``check`` raises when the thing is not usable; ``required`` says (at
    each round, from the live flags) whether a failure makes the instance unready."""

    name: str
    check: Check
    required: Callable[[], bool]


@dataclass(frozen=True)
class Result:
    ok: bool
    required: bool
    detail: str | None = None

    def body(self) -> dict[str, Any]:
        return {"ok": self.ok, "required": self.required, "detail": self.detail}


class Readyz:
    def __init__(
        self,
        flag_store: FlagStore,
        *,
        interval_seconds: float = INTERVAL_SECONDS,
        timeout_seconds: float = TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._flag_store = flag_store
        self._interval = interval_seconds
        self._timeout = timeout_seconds
        self._clock = clock
        self._probes: list[Probe] = []
        self._flags_loaded = False
        self._cached: dict[str, Result] | None = None
        self._checked_at = 0.0
        self._lock = asyncio.Lock()
        flag_store.on_health(self._on_flag_health)

    def _on_flag_health(self, healthy: bool, _error: str | None) -> None:
        if healthy:
            self._flags_loaded = True

    def probe_names(self) -> list[str]:
        return [p.name for p in self._probes]

    def add(self, probe: Probe) -> None:
        self._probes.append(probe)
        self._cached = None

    def watch_resources(self, resources: _Resources) -> None:
        """A probe per store of every resource (``proxy.resources.wiring.Resources``): a
        one-record read; required while the store is the resource's live ``read_from``."""
        for name, service in resources.services.items():
            for store_name, store in service.parts.stores.items():
                self.add(
                    Probe(
                        f"store:{name}.{store_name}",
                        _read_one(store),
                        self._reads_from(name, store_name),
                    )
                )

    def _reads_from(self, resource: str, store: str) -> Callable[[], bool]:
        def required() -> bool:
            state = self._flag_store.snapshot().resources.get(resource)
            return state is not None and state.read_from == store

        return required

    def flags_loaded(self) -> bool:
        if self._flag_store.healthy:
            self._flags_loaded = True
        return self._flags_loaded

    async def results(self) -> dict[str, Result]:
        flags = (
            Result(True, True)
            if self.flags_loaded()
            else Result(False, True, "flag store not reachable since start")
        )
        return {"flags": flags, **await self._store_results()}

    async def _store_results(self) -> dict[str, Result]:
        async with self._lock:
            now = self._clock()
            if self._cached is None or now - self._checked_at >= self._interval:
                outcomes = await asyncio.gather(*(self._run(p) for p in self._probes))
                self._cached = {p.name: r for p, r in zip(self._probes, outcomes, strict=True)}
                self._checked_at = self._clock()
            # ``required`` follows the live flags, not the flags of the cached round.
            return {
                p.name: Result(self._cached[p.name].ok, p.required(), self._cached[p.name].detail)
                for p in self._probes
                if p.name in self._cached
            }

    async def _run(self, probe: Probe) -> Result:
        try:
            async with asyncio.timeout(self._timeout):
                await probe.check()
        except TimeoutError:
            return Result(False, probe.required(), f"no answer within {self._timeout:g} s")
        except Exception as e:  # any failure means unusable; the text may hold a DSN
            return Result(False, probe.required(), f"unreachable ({type(e).__name__})")
        return Result(True, probe.required())

    async def handler(self, request: web.Request) -> web.Response:
        results = await self.results()
        not_ready = sorted(n for n, r in results.items() if r.required and not r.ok)
        body = {
            "status": "not_ready" if not_ready else "ready",
            "not_ready": not_ready,
            "checks": {n: r.body() for n, r in results.items()},
        }
        headers = {"Cache-Control": "no-store"}
        return web.json_response(body, status=503 if not_ready else 200, headers=headers)


def _read_one(store: _Store) -> Check:
    async def check() -> None:
        await store.list({}, 1)

    return check


READYZ = web.AppKey("readyz", Readyz)


def watch_resources(admin_app: web.Application, resources: _Resources) -> None:
    """Add the store probes of ``resources`` to the admin app's ``/readyz``; the composition
    root calls it with ``apps.admin`` and ``apps.resources``."""
    admin_app[READYZ].watch_resources(resources)


__all__ = ["READYZ", "Probe", "Readyz", "Result", "watch_resources"]
