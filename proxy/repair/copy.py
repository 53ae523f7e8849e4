"""Copying a batch of keys in the primary's order: what a dual write's batch and a backfill
page share.

The batch is written to the other store in one call and the primary is read back in one
call; a key the other store did not take, or that the primary moved meanwhile, goes through
``copy_until_stable`` on its own. The rule that makes it safe beside live writers is the
repairer's: whichever copy of a key lands last, its writer read the primary after it landed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from proxy.repair.repairer import Destination, RepairRace, Source, copy_until_stable
from proxy.store.base import ItemResult, Record, StoreError

COPY_ERRORS = (StoreError, TimeoutError, OSError, RepairRace)
"""What a copy may fail with; anything else is a bug and propagates."""


class BatchSource(Source, Protocol):
    async def batch_get(self, keys: Sequence[Any]) -> list[Record]: ...


class BatchDestination(Destination, Protocol):
    async def batch_put(self, records: Sequence[Record]) -> list[ItemResult]: ...


async def copy_batch(
    primary: BatchSource,
    secondary: BatchDestination,
    items: Sequence[tuple[Any, Record | None]],
    key_text: Callable[[Any], str],
    *,
    key_field: str,
) -> dict[int, BaseException]:
    """Make ``secondary`` hold the primary's state of every key in ``items`` (key, the
    primary's state as last read: a record, or None for absent). Returns the failures by
    position; a position not in it is copied."""
    failed: dict[int, BaseException] = {}
    records = [state for _, state in items if state is not None]
    try:
        results = await secondary.batch_put(records) if records else []
        again = await primary.batch_get([k for k, _ in items])
    except COPY_ERRORS as e:
        return dict.fromkeys(range(len(items)), e)
    not_written = {key_text(r.key) for r in results if not r.ok}
    now = {key_text(r[key_field]): r for r in again}
    for n, (key, state) in enumerate(items):
        text = key_text(key)
        current = now.get(text)
        if text not in not_written and current == state:
            continue
        try:
            await copy_until_stable(primary, secondary, key, current)
        except COPY_ERRORS as e:
            failed[n] = e
    return failed
