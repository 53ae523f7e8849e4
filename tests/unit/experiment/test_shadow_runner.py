"""The shadow runner's gathering: store reads' jobs held for ``gather_seconds`` start
together, in one loop turn; other jobs start at once; held jobs count against the queue's
bound and are run, not lost, when the runner drains."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from proxy.experiment.shadow import ShadowRunner
from proxy.metrics import Metrics


class Turns:
    """Counts loop turns, so a test can tell which jobs started in the same one."""

    def __init__(self) -> None:
        self.turn = 0
        self._handle: asyncio.Handle | None = None

    def start(self) -> None:
        self._handle = asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        self.turn += 1
        self._handle = asyncio.get_running_loop().call_soon(self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


def runner(gather: float, queue_size: int = 16) -> tuple[ShadowRunner, CollectorRegistry]:
    registry = CollectorRegistry()
    shadow = ShadowRunner(
        queue_size=queue_size,
        concurrency=8,
        metrics=Metrics.create(registry),
        gather_seconds=gather,
    )
    return shadow, registry


async def until(condition: object, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.005)):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("timed out")


async def test_gathered_jobs_wait_and_then_start_in_one_turn() -> None:
    shadow, _ = runner(gather=0.05)
    await shadow.start()
    turns = Turns()
    turns.start()
    loop = asyncio.get_running_loop()
    started: list[tuple[int, float]] = []

    async def job() -> None:
        started.append((turns.turn, loop.time()))

    submitted = loop.time()
    for _ in range(3):
        assert shadow.submit("users", "get", job, gather=True)
        await asyncio.sleep(0.005)  # reads a few milliseconds apart
    assert started == [] and shadow.depth == 3
    await until(lambda: len(started) == 3)
    assert len({turn for turn, _ in started}) == 1, started
    assert min(at for _, at in started) - submitted >= 0.045
    turns.stop()
    await shadow.drain(1)


@pytest.mark.parametrize(("gather", "held"), [(0.05, False), (0.0, True)])
async def test_other_jobs_and_a_runner_without_gathering_start_at_once(
    gather: float, held: bool
) -> None:
    shadow, _ = runner(gather=gather)
    await shadow.start()
    ran = asyncio.Event()

    async def job() -> None:
        ran.set()

    assert shadow.submit("route", "GET", job, gather=held)
    await asyncio.wait_for(ran.wait(), 0.04)  # well inside the 50 ms a held job waits
    await shadow.drain(1)


async def test_held_jobs_count_against_the_queue_bound() -> None:
    shadow, registry = runner(gather=10.0, queue_size=2)
    await shadow.start()

    async def job() -> None:
        pass

    assert shadow.submit("users", "get", job, gather=True)
    assert shadow.submit("users", "get", job, gather=True)
    assert not shadow.submit("users", "get", job, gather=True)
    assert not shadow.submit("route", "GET", job)
    dropped = registry.get_sample_value(
        "shadowproxy_shadow_dropped_total", {"route": "users", "reason": "queue_full"}
    )
    assert dropped == 1
    await shadow.drain(1)


async def test_draining_runs_the_held_jobs() -> None:
    shadow, registry = runner(gather=10.0)
    await shadow.start()
    ran: list[int] = []

    async def job() -> None:
        ran.append(1)

    for _ in range(3):
        shadow.submit("users", "get", job, gather=True)
    await shadow.drain(5)
    assert ran == [1, 1, 1]
    assert registry.get_sample_value("shadowproxy_shadow_queue_depth") == 0
