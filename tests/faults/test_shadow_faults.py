"""Scenarios a and b: a shadow that fails in every way a backend can, and one that answers
every request differently. The client's answers must be the primary's, byte for byte, and the
proxy's memory must stay bounded; a shadow mismatching on every request engages the diff
budget. Throughput and p99 are measured and printed, asserted only with ``--assert-bounds``."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Iterator

import aiohttp
import pytest

from tests.faults.client import (
    Answer,
    LoadResult,
    closed_loop,
    fetch,
    metric,
    poll,
    request_id,
    rss_bytes,
)
from tests.faults.relay import Mode
from tests.faults.targets import HttpTarget

pytestmark = pytest.mark.needs("primary", "shadow")

RSS_BOUND = 100 * 1024 * 1024
# --assert-bounds: what a shadow mismatching on every request may cost (docs/faults.md). The
# HTTP benchmark's proxy-mismatch phase measured 0.79x at saturation (docs/benchmarks.md).
MISMATCH_THROUGHPUT = 0.75
CONCURRENCY = 16
ROUNDS = 3
FAULTS = {
    "down": (Mode.DOWN, 0.0),  # connection refused
    "slow": (Mode.DELAY, 1.5),  # above the shadow's deadline
    "status500": (Mode.STATUS_500, 0.0),
    "reset": (Mode.RESET, 0.0),  # the request read, then RST
    "garbage": (Mode.GARBAGE, 0.0),  # bytes that are not HTTP
    "huge": (Mode.HUGE, 0.0),  # a 200 with a 1 GiB body
}


@pytest.fixture
def restore_shadow(http_target: HttpTarget) -> Iterator[None]:
    yield
    assert http_target.shadow is not None
    http_target.shadow.set(Mode.PASS)


async def expected_answers(http: aiohttp.ClientSession, target: HttpTarget) -> dict[str, Answer]:
    """Each path's answer from the primary itself: what a proxy that does not shadow gives."""
    assert target.primary_direct is not None
    out: dict[str, Answer] = {}
    for path in target.paths:
        first, _ = await fetch(http, "GET", target.primary_direct + path)
        again, _ = await fetch(http, "GET", target.primary_direct + path)
        assert first == again, (
            f"the primary answers {path} differently each time: choose --request-path values "
            f"with a fixed answer\n{first.describe()}\n{again.describe()}"
        )
        out[path] = first
    return out


async def drive(
    http: aiohttp.ClientSession, target: HttpTarget, expected: dict[str, Answer], count: int
) -> LoadResult:
    """``count`` GETs through the proxy; every answer must be the primary's own."""
    paths = target.paths

    async def one(i: int) -> str | None:
        path = paths[i % len(paths)]
        rid = request_id()
        answer, echoed = await fetch(http, "GET", target.proxy_url + path, request_id=rid)
        if answer != expected[path]:
            return f"GET {path}: got {answer.describe()}\nwanted {expected[path].describe()}"
        if echoed != rid:
            return f"GET {path}: X-Request-ID {echoed!r}, sent {rid!r}"
        return None

    return await closed_loop(count, CONCURRENCY, one)


def wrong_answers(what: str, result: LoadResult, target: HttpTarget) -> str:
    """A failure's message: the first wrong answer, how long answers took and whether the
    test's own loop stalled, and the end of a local proxy's log (its warnings are timed)."""
    logs = target.controller.logs() if target.controller else ""
    return (
        f"{what}: {len(result.failures)} wrong answers, e.g. {result.failures[0]}\n"
        f"latencies: max {max(result.latencies):.2f} s over {len(result.latencies)} requests in "
        f"{result.seconds:.1f} s; the client's loop stalled at most {result.stall:.2f} s\n"
        + (f"the proxy's log ends:\n{logs}" if logs else "")
    )


def labels(target: HttpTarget) -> dict[str, str]:
    return {"route": target.route} if target.route else {}


async def not_matched(http: aiohttp.ClientSession, target: HttpTarget) -> float:
    """Comparisons that did not come out ``match`` (errors, skipped, dropped, mismatches)."""
    every = await metric(http, target.admin_url, "shadowproxy_comparisons_total", **labels(target))
    matched = await metric(
        http, target.admin_url, "shadowproxy_comparisons_total", outcome="match", **labels(target)
    )
    return every - matched


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_shadow_fault_never_reaches_the_client(
    fault: str,
    http_target: HttpTarget,
    http: aiohttp.ClientSession,
    pytestconfig: pytest.Config,
    restore_shadow: None,
) -> None:
    """a. Every answer (status, headers that pass through, body, X-Request-ID) is the one the
    primary gives without a proxy, and the proxy's RSS grows by less than 100 MiB over the
    run; the shadow's failures are counted as comparisons that did not match."""
    assert http_target.shadow is not None
    mode, delay = FAULTS[fault]
    expected = await expected_answers(http, http_target)
    count = pytestconfig.getoption("fault_requests")
    await drive(http, http_target, expected, 100)  # pools and caches warm
    before_outcomes = await not_matched(http, http_target)
    await asyncio.to_thread(http_target.shadow.set, mode, delay=delay)
    pid = http_target.controller.pid() if http_target.controller else None
    rss_before = rss_bytes(pid) if pid else None

    result = await drive(http, http_target, expected, count)

    assert result.failures == [], wrong_answers(fault, result, http_target)

    async def counted() -> bool:
        return await not_matched(http, http_target) > before_outcomes

    await poll(f"the shadow's {fault} counted as comparisons that did not match", counted)
    if pid and rss_before is not None:
        grown = rss_bytes(pid) - rss_before
        print(f"{fault}: RSS {rss_before / 2**20:.0f} MiB, grew {grown / 2**20:+.1f} MiB")
        assert grown < RSS_BOUND, f"RSS grew {grown / 2**20:.0f} MiB over {count} requests"


async def test_shadow_mismatching_every_request_engages_the_diff_budget(
    http_target: HttpTarget,
    http: aiohttp.ClientSession,
    pytestconfig: pytest.Config,
    figures: list[str],
    restore_shadow: None,
) -> None:
    """b. Against a shadow whose every answer differs, client answers are still the primary's
    and mismatches beyond the diff budget are summarised
    (``shadowproxy_diff_summarised_total`` rises). Throughput and p99 with a matching and
    with a mismatching shadow are printed; ``--assert-bounds`` asserts mismatching
    throughput >= MISMATCH_THROUGHPUT x matching and p99 <= matching p99 + 5 ms."""
    assert http_target.shadow is not None
    expected = await expected_answers(http, http_target)
    shadow = http_target.shadow
    count = pytestconfig.getoption("fault_requests")
    await drive(http, http_target, expected, 100)
    summarised = await metric(
        http, http_target.admin_url, "shadowproxy_diff_summarised_total", **labels(http_target)
    )
    mismatches = await metric(
        http, http_target.admin_url, "shadowproxy_comparisons_total",
        outcome="mismatch", **labels(http_target),
    )  # fmt: skip
    runs: dict[str, list[LoadResult]] = {"matching": [], "mismatching": []}
    for _ in range(ROUNDS):  # interleaved, so a neighbour's load falls on both alike
        for name, mode in (("matching", Mode.PASS), ("mismatching", Mode.MISMATCH)):
            await asyncio.to_thread(shadow.set, mode)
            result = await drive(http, http_target, expected, count)
            assert result.failures == [], wrong_answers(name, result, http_target)
            runs[name].append(result)

    # The best rate of the rounds and the median of their p99s: the least disturbed figures.
    rate = {name: max(r.rate for r in results) for name, results in runs.items()}
    p99 = {name: statistics.median(r.p99_ms for r in results) for name, results in runs.items()}
    for name in runs:
        line = (
            f"shadow {name:>11}: {rate[name]:8.0f} requests/s, p99 {p99[name]:6.1f} ms "
            f"(best rate, median p99 of {ROUNDS} rounds of {count} requests, "
            f"{CONCURRENCY} clients)"
        )
        print(line)
        figures.append(line)

    async def summarised_more() -> bool:
        now = await metric(
            http, http_target.admin_url, "shadowproxy_diff_summarised_total",
            **labels(http_target),
        )  # fmt: skip
        return now > summarised

    async def mismatched_more() -> bool:
        now = await metric(
            http, http_target.admin_url, "shadowproxy_comparisons_total",
            outcome="mismatch", **labels(http_target),
        )  # fmt: skip
        return now > mismatches

    await poll("mismatches counted", mismatched_more)
    await poll("the diff budget engaged (shadowproxy_diff_summarised_total rose)", summarised_more)
    if pytestconfig.getoption("assert_bounds"):
        matching, mismatching = rate["matching"], rate["mismatching"]
        assert mismatching >= MISMATCH_THROUGHPUT * matching, (
            f"mismatching throughput {mismatching:.0f}/s < {MISMATCH_THROUGHPUT} x matching "
            f"{matching:.0f}/s"
        )
        slower = p99["mismatching"] - p99["matching"]
        assert slower <= 5, f"mismatching p99 {slower:.1f} ms above matching p99 (bound: 5 ms)"
