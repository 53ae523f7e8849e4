"""The DynamoDB store: one table keyed by the resource key, one GSI per declared index, read
and written through our lean JSON client (``proxy.store.dynamo_http``) because botocore cost
more CPU per call than a shadow read can afford; botocore is only asked for credentials when
none are given, and its conventions decide where the client connects (``proxy.store.aws``,
resolved by whoever builds the store: ``proxy.resources.stores``).

    store = DynamoDBStore("http://127.0.0.1:8000", "us-east-1", "users", schema)
    await store.open()
    await store.init()          # create table + GSIs (on demand) if missing, wait for ACTIVE
    record = await store.get(key)
    await store.close()

Its parts, each a module: the table and its indexes (``dynamo_table``), the batch calls and
their limits (``dynamo_batch``), the codec (``codec_dynamodb``), what a failure means
(``dynamo_errors``). 400 KB per item is enforced here, not left to the service (moto accepts
more).

``list`` is a Scan with a FilterExpression resuming at ``ExclusiveStartKey``: it reads the
table in hash order until ``limit`` matches are found, so a selective filter reads much
of the table. Reads are strongly consistent unless ``consistent_reads=False``; index
queries are eventually consistent (GSIs cannot be read consistently).

Reads by key without a projection that start in the same loop turn share one
``BatchGetItem`` (``dynamo_coalesce``; ``coalesce_reads=False`` sends each as ``GetItem``).

``scan_page`` caps the items read per Scan call of ``scan`` (a backfill's read rate).
``client_wrapper`` receives the opened ``DynamoHttpClient`` and returns what the store calls
(anything with its ``call(operation, request)``); tests use it to count calls and inject
``UnprocessedItems`` or throttling errors.

Each call is retried inside the client first (``sdk_max_attempts`` calls for what botocore's
standard mode retries, within the client's retry quota); the store's own ``RetryPolicy``
then retries throttled batch calls and pages and unprocessed items on top.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any

import orjson

from proxy.store import cursor as cursors
from proxy.store import dynamo_batch, dynamo_table
from proxy.store.base import (
    InvalidCursor,
    ItemResults,
    KeyConflict,
    LimitExceeded,
    Record,
    RecordNotFound,
    Records,
    ScanPage,
    StoreError,
    StoreUnavailable,
    Throttled,
)
from proxy.store.codec_dynamodb import (
    COMPARED_STEPS,
    MAX_ITEM_BYTES,
    Item,
    decode_item,
    decode_key,
    decode_value,
    encode_item,
    encode_key,
    encode_value,
    item_size,
)
from proxy.store.compared import ComparedDecoder
from proxy.store.dynamo_coalesce import ReadCoalescer
from proxy.store.dynamo_errors import DynamoError, error_code, translate
from proxy.store.dynamo_http import DynamoHttpClient
from proxy.store.retry import RetryPolicy
from proxy.store.schema import Schema

KIND = "dynamodb"
MAX_SEGMENTS = 1_000_000


class DynamoDBStore:
    kind = KIND

    def __init__(
        self,
        endpoint_url: str | None,
        region: str,
        table: str,
        schema: Schema,
        *,
        retry: RetryPolicy | None = None,
        client_wrapper: Callable[[Any], Any] | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        sdk_max_attempts: int = 3,
        deadline: float | None = None,
        max_connections: int = 64,
        max_waiting: int | None = None,
        consistent_reads: bool = True,
        coalesce_reads: bool = True,
        scan_page: int | None = None,
        use_fips: bool = False,
        ca_bundle: str | None = None,
        profile: str | None = None,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.region = region
        self.table = table
        self.schema = schema
        self.retry = retry or RetryPolicy()
        self._wrap = client_wrapper
        self.consistent_reads = consistent_reads
        self._scan_page = scan_page
        self.unprocessed_rounds = 0  # batch answers that left items for another round
        self._http = DynamoHttpClient(
            endpoint_url,
            region,
            access_key_id=aws_access_key_id,
            secret_access_key=aws_secret_access_key,
            session_token=aws_session_token,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_attempts=sdk_max_attempts,
            deadline=deadline,
            pool_limit=max_connections,
            max_waiting=max_waiting,
            use_fips=use_fips,
            ca_bundle=ca_bundle,
            profile=profile,
        )
        self._client: Any = None  # the client (or the test wrapper around it) while open
        self._reads = ReadCoalescer(self._get_raw, self._batch_get_once) if coalesce_reads else None
        self._compared = ComparedDecoder(schema, COMPARED_STEPS, decode_value)

    @property
    def throttles(self) -> int:
        """Throttling answers and batch rounds left unprocessed so far: a backfill slows
        down when this grows."""
        return self._http.throttles + self.unprocessed_rounds

    async def open(self) -> None:
        if self._client is not None:
            return
        try:
            await self._http.open()
        except DynamoError as e:
            raise translate(e) from e
        self._client = self._wrap(self._http) if self._wrap else self._http

    async def close(self) -> None:
        if self._reads is not None:
            await self._reads.close()
        if self._client is not None:
            self._client = None
            await self._http.close()

    async def __aenter__(self) -> DynamoDBStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # table ------------------------------------------------------------------------------

    async def init(self, *, timeout: float = 60.0) -> None:
        """Create the table (on-demand billing) and any missing GSI; wait until ACTIVE."""
        await dynamo_table.ensure_table(self._call, self.table, self.schema, timeout=timeout)

    # reads ------------------------------------------------------------------------------

    async def get(self, key: Any, fields: Sequence[str] | None = None) -> Record | None:
        item, names = await self._read(key, fields)
        return None if item is None else decode_item(self.schema, item, names)

    async def get_compared(self, key: Any, fields: Sequence[str] | None = None) -> Any:
        """What a comparison reads of ``get(key, fields)``: ``schema.to_json(record,
        fields=fields, drift=True)``, or None, decoded straight from DynamoDB's JSON
        (``proxy.store.compared``)."""
        item, names = await self._read(key, fields)
        if item is None:
            return None
        return self._compared.decode(item, names if fields is None else dict.fromkeys(fields))

    async def _read(
        self, key: Any, fields: Sequence[str] | None
    ) -> tuple[Item | None, Sequence[str]]:
        if fields is not None:
            names = self.schema.check_fields(fields)
            return await self._get_raw(key, names), names
        if self._reads is not None:
            return await self._reads.get(key), self.schema.field_names
        return await self._get_raw(key), self.schema.field_names

    async def _get_raw(self, key: Any, projection: Sequence[str] | None = None) -> Item | None:
        request: dict[str, Any] = {
            "TableName": self.table,
            "Key": encode_key(self.schema, key),
            "ConsistentRead": self.consistent_reads,
        }
        if projection is not None:
            request.update(_projection(projection))
        response = await self._call("GetItem", **request)
        item: Item | None = response.get("Item")
        return item

    async def _batch_get_once(
        self, keys: Sequence[Any]
    ) -> tuple[list[tuple[Any, Item]], list[Any]]:
        """One ``BatchGetItem`` of up to 100 keys: each item found with the key asked for it,
        and the keys left unprocessed. An item is matched by its key attribute as it was
        asked for, else (a number DynamoDB spelled its own way) by decoding it."""
        request = dynamo_batch.get_request(self, keys)
        found, unprocessed = await dynamo_batch.get_round(self, request)
        name = self.schema.key
        asked = {_spelling(k[name]): key for k, key in zip(request["Keys"], keys, strict=True)}
        keyed = []
        for item in found:
            key = asked.get(_spelling(item.get(name)))
            keyed.append((decode_key(self.schema, item) if key is None else key, item))
        return keyed, [decode_key(self.schema, k) for k in unprocessed]

    async def query_index(self, index: str, value: Any, limit: int) -> Records:
        spec = self.schema.index(index)
        request: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": spec.dynamodb_index,
            "KeyConditionExpression": "#f = :v",
            "ExpressionAttributeNames": {"#f": spec.field},
            "ExpressionAttributeValues": {
                ":v": encode_value(self.schema.fields[spec.field], value)
            },
        }
        async with aclosing(self._pages("Query", request, _positive(limit))) as items:
            return [self._decode(item) async for item in items]

    async def list(
        self, filters: Mapping[str, Any], limit: int, cursor: str | None = None
    ) -> tuple[Records, str | None]:
        self.schema.check_filters(filters)
        request: dict[str, Any] = {"TableName": self.table, "ConsistentRead": self.consistent_reads}
        request.update(self._filter(filters))
        if cursor is not None:
            last = cursors.decode(KIND, self.schema, cursor)
            request["ExclusiveStartKey"] = encode_key(self.schema, last)
        records: Records = []
        more = False
        async with aclosing(self._pages("Scan", request, _positive(limit) + 1)) as items:
            async for item in items:
                if len(records) == limit:
                    more = True
                    break
                records.append(self._decode(item))
        next_cursor = (
            cursors.encode(KIND, self.schema, records[-1][self.schema.key]) if more else None
        )
        return records, next_cursor

    async def batch_get(self, keys: Sequence[Any]) -> Records:
        """Records of the keys that exist, in the order asked; chunks of 100 keys."""
        return await dynamo_batch.batch_get(self, keys)

    async def scan_pages(
        self, segment: int, total_segments: int, *, after: str | None = None
    ) -> AsyncIterator[ScanPage]:
        """Pages of one parallel-scan segment (DynamoDB's ``Segment``/``TotalSegments``);
        ``position`` is the page's ``LastEvaluatedKey`` as JSON. Throttled pages are retried
        under the store's retry policy."""
        if not 0 <= segment < total_segments <= MAX_SEGMENTS:
            raise ValueError(f"segment must be in 0..{total_segments - 1}, got {segment!r}")
        request: dict[str, Any] = {
            "TableName": self.table,
            "Segment": segment,
            "TotalSegments": total_segments,
            "ConsistentRead": self.consistent_reads,
        }
        if self._scan_page is not None:
            request["Limit"] = self._scan_page
        if after is not None:
            try:
                start = orjson.loads(after)
            except orjson.JSONDecodeError as e:
                raise InvalidCursor(f"not a scan position of this table: {after[:80]!r}") from e
            if not isinstance(start, dict):
                raise InvalidCursor(f"not a scan position of this table: {after[:80]!r}")
            request["ExclusiveStartKey"] = start
        while True:
            response = await self._call_retrying("Scan", **request)
            records = [self._decode(item) for item in response.get("Items", [])]
            start = response.get("LastEvaluatedKey")
            if not start:
                yield ScanPage(records, None)
                return
            yield ScanPage(records, orjson.dumps(start).decode())
            request["ExclusiveStartKey"] = start

    async def _pages(
        self, operation: str, request: dict[str, Any], limit: int | None
    ) -> AsyncGenerator[Item, None]:
        """Items of a paginated query/scan, at most ``limit``; throttled pages are retried."""
        request = dict(request)
        seen = 0
        while True:
            response = await self._call_retrying(operation, **request)
            for item in response.get("Items", []):
                yield item
                seen += 1
                if limit is not None and seen >= limit:
                    return
            start = response.get("LastEvaluatedKey")
            if not start:
                return
            request["ExclusiveStartKey"] = start

    # writes -----------------------------------------------------------------------------

    async def create(self, record: Record) -> None:
        try:
            await self._call(
                "PutItem",
                TableName=self.table,
                Item=self._encode(record),
                ConditionExpression="attribute_not_exists(#k)",
                ExpressionAttributeNames={"#k": self.schema.key},
            )
        except StoreError as e:
            if error_code(e) == "ConditionalCheckFailedException":
                raise KeyConflict(f"{self.schema.name} {record[self.schema.key]!s} exists") from e
            raise

    async def put(self, record: Record) -> None:
        await self._call("PutItem", TableName=self.table, Item=self._encode(record))

    async def update(self, key: Any, changes: Mapping[str, Any]) -> Record:
        changes = self.schema.check_changes(key, changes)
        if not changes:
            record = await self.get(key)
            if record is None:
                raise RecordNotFound(f"{self.schema.name} {key!s} not found")
            return record
        names: dict[str, str] = {"#k": self.schema.key}
        values: dict[str, Any] = {}
        sets, removes = [], []
        for i, (name, value) in enumerate(changes.items()):
            names[f"#u{i}"] = name
            av = encode_value(self.schema.fields[name], value)
            if av is None:
                removes.append(f"#u{i}")
            else:
                values[f":u{i}"] = av
                sets.append(f"#u{i} = :u{i}")
        expression = " ".join(
            part
            for part in (
                f"SET {', '.join(sets)}" if sets else "",
                f"REMOVE {', '.join(removes)}" if removes else "",
            )
            if part
        )
        request: dict[str, Any] = {
            "TableName": self.table,
            "Key": encode_key(self.schema, key),
            "UpdateExpression": expression,
            "ConditionExpression": "attribute_exists(#k)",
            "ExpressionAttributeNames": names,
            "ReturnValues": "ALL_NEW",
        }
        if values:
            request["ExpressionAttributeValues"] = values
        try:
            response = await self._call("UpdateItem", **request)
        except StoreError as e:
            if error_code(e) == "ConditionalCheckFailedException":
                raise RecordNotFound(f"{self.schema.name} {key!s} not found") from e
            raise
        return self._decode(response["Attributes"])

    async def delete(self, key: Any) -> None:
        try:
            await self._call(
                "DeleteItem",
                TableName=self.table,
                Key=encode_key(self.schema, key),
                ConditionExpression="attribute_exists(#k)",
                ExpressionAttributeNames={"#k": self.schema.key},
            )
        except StoreError as e:
            if error_code(e) == "ConditionalCheckFailedException":
                raise RecordNotFound(f"{self.schema.name} {key!s} not found") from e
            raise

    async def batch_put(self, records: Sequence[Record]) -> ItemResults:
        """Upsert in BatchWriteItem chunks of 25 (``proxy.store.dynamo_batch``): a result per
        record, in order; the last record wins when a key repeats."""
        return await dynamo_batch.batch_put(self, records)

    # plumbing ---------------------------------------------------------------------------

    async def _call(self, operation: str, **request: Any) -> dict[str, Any]:
        """One DynamoDB operation by its API name (``"GetItem"``), errors translated."""
        if self._client is None:
            raise StoreUnavailable(f"dynamodb store for {self.table!r} is not open")
        try:
            response: dict[str, Any] = await self._client.call(operation, request)
        except (DynamoError, OSError) as e:
            raise translate(e) from e
        return response

    async def _call_retrying(self, operation: str, **request: Any) -> dict[str, Any]:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._call(operation, **request)
            except Throttled:
                if attempt >= self.retry.max_attempts:
                    raise
            await asyncio.sleep(self.retry.delay(attempt))

    def _encode(self, record: Record) -> Item:
        item = encode_item(self.schema, record)
        size = item_size(item)
        if size > MAX_ITEM_BYTES:
            raise LimitExceeded(
                f"{self.schema.name} {record.get(self.schema.key)!s}: item is {size} bytes, "
                f"DynamoDB allows {MAX_ITEM_BYTES}"
            )
        return item

    def _decode(self, item: Item) -> Record:
        return decode_item(self.schema, item, self.schema.field_names)

    def _filter(self, filters: Mapping[str, Any]) -> dict[str, Any]:
        if not filters:
            return {}
        parts: list[str] = []
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        for i, (name, value) in enumerate(filters.items()):
            names[f"#f{i}"] = name
            if value is None:
                parts.append(f"(attribute_not_exists(#f{i}) OR attribute_type(#f{i}, :null))")
                values[":null"] = {"S": "NULL"}
            else:
                parts.append(f"#f{i} = :f{i}")
                values[f":f{i}"] = encode_value(self.schema.fields[name], value)
        return {
            "FilterExpression": " AND ".join(parts),
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }


def _spelling(av: Any) -> Any:
    """A key's AttributeValue as a dict key (``("S", "...")``), None when it is not one."""
    if not isinstance(av, dict) or len(av) != 1:
        return None
    ((tag, value),) = av.items()
    return (tag, value) if isinstance(value, str) else None


def _projection(names: Sequence[str]) -> dict[str, Any]:
    placeholders = {f"#p{i}": name for i, name in enumerate(names)}
    return {
        "ProjectionExpression": ", ".join(placeholders),
        "ExpressionAttributeNames": placeholders,
    }


def _positive(limit: int) -> int:
    if not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    return limit
