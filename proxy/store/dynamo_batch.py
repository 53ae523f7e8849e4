"""A DynamoDB store's batch calls: BatchWriteItem in chunks of 25 and BatchGetItem in chunks
of 100 (DynamoDB's limits, enforced here because moto accepts more), with what DynamoDB
leaves unprocessed, or throttles, tried again under the store's ``RetryPolicy`` — batches are
where throttling shows first, and one bad record or key must not fail the rest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from proxy.store.base import (
    InvalidRecord,
    ItemResult,
    ItemResults,
    Record,
    Records,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
    Throttled,
)
from proxy.store.codec_dynamodb import Items, decode_key, encode_key

if TYPE_CHECKING:
    from proxy.store.dynamodb import DynamoDBStore

MAX_BATCH_WRITE = 25
MAX_BATCH_GET = 100
log = logging.getLogger("proxy.store.dynamodb")


async def batch_get(store: DynamoDBStore, keys: Sequence[Any]) -> Records:
    """Records of the keys that exist, in the order asked; chunks of 100 keys."""
    wanted = list(dict.fromkeys(keys))
    found: dict[Any, Record] = {}
    for start in range(0, len(wanted), MAX_BATCH_GET):
        chunk = wanted[start : start + MAX_BATCH_GET]
        for item in await _get_chunk(store, chunk):
            record = store._decode(item)
            found[record[store.schema.key]] = record
    return [found[key] for key in wanted if key in found]


def get_request(store: DynamoDBStore, keys: Sequence[Any]) -> dict[str, Any]:
    """A table's part of a ``BatchGetItem``: its keys, read as the store reads."""
    return {
        "Keys": [encode_key(store.schema, key) for key in keys],
        "ConsistentRead": store.consistent_reads,
    }


async def get_round(store: DynamoDBStore, request: dict[str, Any]) -> tuple[Items, Items]:
    """One ``BatchGetItem`` of ``request``: the items found and the keys left unprocessed
    (a round that leaves some is counted in ``unprocessed_rounds``)."""
    table = store.table
    response = await store._call("BatchGetItem", RequestItems={table: request})
    unprocessed = response.get("UnprocessedKeys", {}).get(table, {}).get("Keys") or []
    if unprocessed:
        store.unprocessed_rounds += 1
    return response.get("Responses", {}).get(table, []), unprocessed


async def _get_chunk(store: DynamoDBStore, keys: Sequence[Any]) -> Items:
    retry = store.retry
    request = get_request(store, keys)
    items: Items = []
    attempt = 0
    while True:
        attempt += 1
        try:
            found, unprocessed = await get_round(store, request)
        except Throttled:
            if attempt >= retry.max_attempts:
                raise
            await asyncio.sleep(retry.delay(attempt))
            continue
        items.extend(found)
        if not unprocessed:
            return items
        if attempt >= retry.max_attempts:
            raise Throttled(
                f"dynamodb: {len(unprocessed)} keys unprocessed after {attempt} attempts"
            )
        request = {**request, "Keys": unprocessed}
        await asyncio.sleep(retry.delay(attempt))


async def batch_put(store: DynamoDBStore, records: Sequence[Record]) -> ItemResults:
    """Upsert in BatchWriteItem chunks of 25; the last record wins when a key repeats.

    Each record's result is its key's: a record that cannot be encoded or is over 400 KB
    fails alone; unprocessed items still pending after the retry budget fail as
    ``Throttled``; when the endpoint is unreachable the remaining chunks are not tried.
    """
    key_name = store.schema.key
    own_errors: dict[int, StoreError] = {}
    latest: dict[Any, dict[str, Any]] = {}
    for position, record in enumerate(records):
        if record.get(key_name) is None:
            own_errors[position] = InvalidRecord("record has no key")
            continue
        try:
            latest[record[key_name]] = {"PutRequest": {"Item": store._encode(record)}}
        except StoreError as e:
            own_errors[position] = e
    requests = list(latest.items())
    failed: dict[Any, StoreError] = {}
    for start in range(0, len(requests), MAX_BATCH_WRITE):
        chunk = dict(requests[start : start + MAX_BATCH_WRITE])
        failures = await _write_chunk(store, chunk)
        failed.update(failures)
        down = next(
            (e for e in failures.values() if type(e) in (StoreUnavailable, StoreTimeout)), None
        )
        if down is not None:
            failed.update({key: down for key, _ in requests[start + MAX_BATCH_WRITE :]})
            break
    results = []
    for position, record in enumerate(records):
        key = record.get(key_name)
        error = own_errors[position] if position in own_errors else failed.get(key)
        results.append(ItemResult(key, error))
    return results


async def _write_chunk(
    store: DynamoDBStore, pending: dict[Any, dict[str, Any]]
) -> dict[Any, StoreError]:
    """Write up to 25 put requests; returns the keys that failed and why."""
    table, retry = store.table, store.retry
    attempt = 0
    while True:
        attempt += 1
        try:
            response = await store._call(
                "BatchWriteItem", RequestItems={table: list(pending.values())}
            )
        except Throttled as e:
            if attempt >= retry.max_attempts:
                return dict.fromkeys(pending, e)
            await asyncio.sleep(retry.delay(attempt))
            continue
        except StoreError as e:
            return dict.fromkeys(pending, e)
        unprocessed = response.get("UnprocessedItems", {}).get(table, [])
        if not unprocessed:
            return {}
        store.unprocessed_rounds += 1
        pending = {
            decode_key(store.schema, request["PutRequest"]["Item"]): request
            for request in unprocessed
        }
        if attempt >= retry.max_attempts:
            log.warning("dynamodb batch write: %d items unprocessed", len(pending))
            error = Throttled(f"dynamodb: unprocessed after {attempt} attempts")
            return dict.fromkeys(pending, error)
        await asyncio.sleep(retry.delay(attempt))
