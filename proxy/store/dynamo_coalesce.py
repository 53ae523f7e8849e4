"""Reads by key that start in the same turn of the event loop share one ``BatchGetItem``.

Under load many reads by key start together: a store-mode proxy shadowing every read had a
median of 8 ``GetItem`` calls starting in one loop turn (``tests/benchmarks/store_proxy.py``,
one worker, 32 connections). Each call is signed, sent, answered and parsed on its own, and
that per-call part was most of a shadow read's CPU. Gathered into one ``BatchGetItem`` (the
same strongly consistent read, the same read capacity), the proxy's CPU per shadowed request
fell by 14-41% in the runs measured (docs/benchmarks.md).

What each caller sees stays what a ``GetItem`` of its own key would give it:

- a read waits for nothing: the batch goes out at the end of the loop turn in which its first
  read started, and a turn with one read sends that read as a ``GetItem``, from the caller's
  own task (as an uncoalesced read would: no task of the coalescer's, so ``close`` does not
  answer it; most reads at low shadow rates are such);
- the item as DynamoDB sent it (each caller decodes its own), or ``None`` when the key is
  absent;
- keys DynamoDB leaves unprocessed (throttling, or an answer over 16 MB) are read again one by
  one with ``GetItem``, whose own answer (an item, or ``Throttled``) is the caller's;
- when the endpoint is unavailable, slow or throttling the whole call (``StoreUnavailable``),
  every caller in the batch gets that error, as each of their calls would have; any other
  failure of the batch (one key DynamoDB refuses, say) is not charged to the others: each key
  is read again alone;
- a caller that is cancelled stops waiting; the others are not disturbed;
- a key asked twice in one turn is asked once (DynamoDB refuses duplicate keys) and both
  callers get the answer. At most 100 keys go in one call (DynamoDB's limit).

Reads with a projection (``fields``) are not gathered: they go out as ``GetItem``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from proxy.store.base import StoreError, StoreUnavailable
from proxy.tasks import cancel, spawn

MAX_KEYS = 100  # BatchGetItem's limit

T = TypeVar("T")  # what a read answers with: the store's item as it came
GetOne = Callable[[Any], Awaitable[T | None]]
# One BatchGetItem: (key, item) of the items found, and the keys DynamoDB left unprocessed.
GetMany = Callable[[Sequence[Any]], Awaitable[tuple[list[tuple[Any, T]], list[Any]]]]
Batch = dict[Any, list["asyncio.Future[Any]"]]  # an item, None or ALONE


class _Alone:
    """What a waiter gets when it is the only read of its turn: read the key yourself."""


ALONE = _Alone()


class ReadCoalescer(Generic[T]):
    def __init__(
        self, get_one: GetOne[T], get_many: GetMany[T], *, max_keys: int = MAX_KEYS
    ) -> None:
        self._get_one = get_one
        self._get_many = get_many
        self._max_keys = max_keys
        self._open: Batch | None = None  # the batch reads of this loop turn join
        self._calls: set[asyncio.Task[None]] = set()
        self.batches = 0  # BatchGetItem calls sent, for tests and benchmarks
        self.keys_batched = 0

    async def get(self, key: Any) -> T | None:
        loop = asyncio.get_running_loop()
        batch = self._open
        if batch is None or (len(batch) >= self._max_keys and key not in batch):
            batch = self._open = {}
            loop.call_soon(self._send, batch)
        waiter: asyncio.Future[Any] = loop.create_future()
        batch.setdefault(key, []).append(waiter)
        answer = await waiter
        if answer is ALONE:
            return await self._get_one(key)
        item: T | None = answer
        return item

    async def close(self) -> None:
        """Cancel the calls in flight; their callers get ``StoreUnavailable``."""
        await cancel(*self._calls)

    def _send(self, batch: Batch) -> None:
        if self._open is batch:
            self._open = None
        live = {key: waiters for key, waiters in batch.items() if _waiting(waiters)}
        if len(live) == 1:
            (waiters,) = live.values()
            pending = [w for w in waiters if not w.done()]
            if len(pending) == 1:  # one read: its caller sends it, saving a task per read
                pending[0].set_result(ALONE)
                return
        if live:
            task = spawn(self._call(live), name="dynamodb-batch-get")
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)

    async def _call(self, batch: Batch) -> None:
        everyone = list(batch.values())
        try:
            if len(batch) == 1:
                await self._alone(batch)
                return
            self.batches += 1
            self.keys_batched += len(batch)
            try:
                found, unprocessed = await self._get_many(list(batch))
            except StoreUnavailable as e:
                _fail(batch.values(), e)
                return
            except StoreError:
                await self._alone(batch)  # one key's fault is not the others'
                return
            for key, item in found:
                _answer(batch.pop(key, ()), item)
            left = {key: batch.pop(key) for key in set(unprocessed) if key in batch}
            for waiters in batch.values():  # neither found nor unprocessed: absent
                _answer(waiters, None)
            if left:
                await self._alone(left)
        except asyncio.CancelledError:
            _fail(everyone, StoreUnavailable("dynamodb: the store closed during the read"))
            raise
        except BaseException as e:
            _fail(everyone, e)
            raise

    async def _alone(self, batch: Batch) -> None:
        """Each key by its own ``GetItem``, at once; each caller gets its key's answer."""

        async def one(key: Any, waiters: list[asyncio.Future[Any]]) -> None:
            try:
                item = await self._get_one(key)
            except Exception as e:
                _fail((waiters,), e)
            else:
                _answer(waiters, item)

        await asyncio.gather(*(one(key, waiters) for key, waiters in batch.items()))


def _waiting(waiters: list[asyncio.Future[Any]]) -> bool:
    return any(not w.done() for w in waiters)


def _answer(waiters: Sequence[asyncio.Future[Any]], item: Any) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(item)


def _fail(batches: Any, error: BaseException) -> None:
    for waiters in batches:
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error)
