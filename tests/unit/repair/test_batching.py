"""TickBatch: calls of one loop tick go out together; results and failures reach each caller."""

from __future__ import annotations

import asyncio

import pytest

from proxy.repair import batching
from proxy.repair.batching import TickBatch


async def test_calls_of_one_tick_share_one_send_and_get_their_own_results() -> None:
    sent: list[list[int]] = []

    async def send(items: list[int]) -> list[int]:
        sent.append(items)
        return [i * 10 for i in items]

    batch: TickBatch[int, int] = TickBatch(send, name="t")
    results = await asyncio.gather(batch([1, 2]), batch([3]), batch([]), batch([4, 5, 6]))
    assert results == [[10, 20], [30], [], [40, 50, 60]]
    assert sent == [[1, 2, 3, 4, 5, 6]]
    assert await batch([7]) == [70]  # a later tick: a send of its own
    assert sent[-1] == [7]


async def test_a_large_tick_is_sent_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batching, "MAX_BATCH", 2)
    sizes: list[int] = []

    async def send(items: list[int]) -> list[int]:
        sizes.append(len(items))
        return items

    batch: TickBatch[int, int] = TickBatch(send, name="t")
    assert await asyncio.gather(batch([1, 2, 3]), batch([4, 5])) == [[1, 2, 3], [4, 5]]
    assert sizes == [2, 2, 1]


async def test_a_failed_send_fails_every_caller_in_it() -> None:
    async def send(items: list[int]) -> list[int]:
        raise ConnectionError("redis down")

    batch: TickBatch[int, int] = TickBatch(send, name="t")
    results = await asyncio.gather(batch([1]), batch([2]), return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError, ConnectionError]
