"""What the fault scenarios ask and measure: answers as a client sees them, closed-loop load
with latencies, the admin API and ``/metrics``, a process's resident memory."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

# Headers that are the connection's or the moment's, not the backend's answer: they may
# differ between two fetches of the same answer (or a streamed answer loses its length).
VOLATILE = frozenset(
    {"date", "connection", "keep-alive", "transfer-encoding", "content-length", "server"}
)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def describe(self) -> str:
        return f"{self.status} {list(self.headers)} {self.body[:200]!r} ({len(self.body)} bytes)"


def passing_headers(raw: Sequence[tuple[bytes, bytes]]) -> tuple[tuple[str, str], ...]:
    """The answer's headers a client relies on, in order, without the volatile ones and
    without ``X-Request-ID`` (the proxy echoes it; checked apart)."""
    out = []
    for name, value in raw:
        lower = name.decode("latin-1").lower()
        if lower in VOLATILE or lower == "x-request-id":
            continue
        out.append((lower, value.decode("latin-1")))
    return tuple(sorted(out))


async def fetch(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    request_id: str | None = None,
    json: Any = None,
) -> tuple[Answer, str | None]:
    """The answer and the ``X-Request-ID`` it carried."""
    headers = {"X-Request-ID": request_id} if request_id else {}
    async with http.request(method, url, headers=headers, json=json) as r:
        body = await r.read()
        return Answer(r.status, passing_headers(r.raw_headers), body), r.headers.get("X-Request-ID")


def request_id() -> str:
    return f"fault-{uuid.uuid4().hex}"


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    stall: float = 0.0
    """The longest the client's own event loop was held up (seconds): a stall of the test
    process, not of the proxy, shows here."""

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies, 0.99) * 1000


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


async def closed_loop(
    count: int,
    concurrency: int,
    one: Callable[[int], Awaitable[str | None]],
) -> LoadResult:
    """``count`` calls of ``one(i)``, ``concurrency`` at a time, each started when one ends;
    ``one`` returns None when the answer was right, else what was wrong."""
    result = LoadResult()
    next_index = iter(range(count))

    async def worker() -> None:
        for i in next_index:
            started = time.perf_counter()
            try:
                wrong = await one(i)
            except (aiohttp.ClientError, TimeoutError) as e:
                wrong = f"request {i}: {type(e).__name__}: {e}"
            result.latencies.append(time.perf_counter() - started)
            if wrong is not None:
                result.failures.append(wrong)

    async def watch(tick: float = 0.05) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(tick)
            result.stall = max(result.stall, time.perf_counter() - before - tick)

    watcher = asyncio.ensure_future(watch())
    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        watcher.cancel()
    result.seconds = time.perf_counter() - started
    return result


async def metric(http: aiohttp.ClientSession, admin_url: str, name: str, **labels: str) -> float:
    """The sum of every sample of ``name`` (e.g. ``shadowproxy_comparisons_total``) whose
    labels include ``labels``."""
    async with http.get(f"{admin_url}/metrics") as r:
        assert r.status == 200, f"{admin_url}/metrics: {r.status}"
        text = await r.text()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def poll(
    what: str,
    check: Callable[[], Awaitable[bool]],
    *,
    timeout: float = 60.0,
    interval: float = 0.1,
) -> None:
    """Until ``check()`` is true; AssertionError naming ``what`` after a generous timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if await check():
                return
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout:g}s: {what}")
        await asyncio.sleep(interval)


@dataclass(frozen=True)
class Admin:
    url: str
    token: str | None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def flags(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        async with http.get(f"{self.url}/flags", headers=self.headers) as r:
            assert r.status == 200, f"GET /flags: {r.status} {await r.text()}"
            body: dict[str, Any] = orjson.loads(await r.read())
            return body

    async def set_flag(
        self, http: aiohttp.ClientSession, name: str, value: Any, reason: str
    ) -> tuple[int, str]:
        payload = {"value": value, "reason": reason, "force": True}
        async with http.put(f"{self.url}/flags/{name}", headers=self.headers, json=payload) as r:
            return r.status, await r.text()

    async def healthy(self, http: aiohttp.ClientSession) -> bool:
        async with http.get(f"{self.url}/healthz") as r:
            return r.status == 200


def rss_bytes(pid: int) -> int:
    """VmRSS of a local process, from /proc."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        raise AssertionError(f"no process {pid} on this host (--proxy-pid)") from None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def error_envelope(body: bytes) -> Mapping[str, Any]:
    """The proxy's ``{"error": {"code", "message", "request_id"}}``; AssertionError else."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise AssertionError(f"not JSON: {body[:200]!r}") from e
    assert isinstance(parsed, dict) and isinstance(parsed.get("error"), dict), parsed
    error: dict[str, Any] = parsed["error"]
    assert {"code", "message", "request_id"} <= error.keys(), error
    return error
