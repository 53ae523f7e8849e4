"""The store vocabulary: what a record is, what a store can do, and how it fails.

Error tree (the HTTP layer maps the leaves to statuses)::

    StoreError                  a store could not do what was asked (502)
    ├── RecordNotFound          the key does not exist (404)
    ├── KeyConflict             the key (or a unique index value) already exists (409)
    ├── LimitExceeded           a store limit, e.g. a DynamoDB item over 400 KB (413)
    ├── InvalidCursor           a list cursor that this store did not issue (400)
    ├── InvalidRecord           a record holding a value the store cannot encode (502)
    └── StoreUnavailable        connection refused or lost, table missing (503)
        ├── RequestCut          the connection broke after the request went out (503)
        ├── StoreTimeout        the store did not answer in time (504)
        ├── Throttled           still throttled / unprocessed after the retry budget (503)
        └── StoreBusy           every connection in use and max_waiting calls already
                                waiting: refused at once, not queued (503)

Client input errors are not store errors: see ``proxy.store.schema.SchemaError``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

from comparators.errors import ShadowProxyError

Record = dict[str, Any]
"""A canonical record: field name -> canonical value (see ``proxy.store.fieldtypes``)."""

Records = list[Record]


class StoreError(ShadowProxyError):
    """Base of every error a store raises."""


class RecordNotFound(StoreError):
    pass


class KeyConflict(StoreError):
    pass


class LimitExceeded(StoreError):
    pass


class InvalidCursor(StoreError):
    pass


class InvalidRecord(StoreError):
    pass


class StoreUnavailable(StoreError):
    pass


class RequestCut(StoreUnavailable):
    pass


class StoreTimeout(StoreUnavailable):
    pass


class Throttled(StoreUnavailable):
    pass


class StoreBusy(StoreUnavailable):
    pass


def outcome_unknown(error: BaseException) -> bool:
    """Whether a failed write may still have happened, or land later: no answer in time, a
    connection cut after the request went out. A refusal (throttled, conflict, not found)
    or a connection that could not be made is not."""
    return isinstance(
        error, TimeoutError | StoreTimeout | RequestCut | ConnectionResetError | BrokenPipeError
    )


_RETRY_UNKNOWN_WRITES: ContextVar[bool] = ContextVar("retry_unknown_writes", default=True)


def retrying_unknown_writes() -> bool:
    """Whether a store client may retry a write whose outcome is unknown (see below)."""
    return _RETRY_UNKNOWN_WRITES.get()


@contextmanager
def no_retry_of_unknown_writes() -> Iterator[None]:
    """Within this block a store client does not retry a write whose outcome is unknown but
    raises it. The dual writer and the repairer copy so: a retry that succeeds would hide the
    first attempt, which may still land later, over a newer copy, with nobody left to
    notice; a raised failure is repaired after ``repair.late_write_seconds`` instead."""
    token = _RETRY_UNKNOWN_WRITES.set(False)
    try:
        yield
    finally:
        _RETRY_UNKNOWN_WRITES.reset(token)


@dataclass(frozen=True, slots=True)
class ItemResult:
    """The outcome of one record of a batch write, in the order the records were given."""

    key: Any
    error: StoreError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


ItemResults = list[ItemResult]


@dataclass(frozen=True, slots=True)
class ScanPage:
    """One page of a scan segment, and where to resume after it: ``position`` is opaque text
    for ``scan_pages(after=...)`` (None when the segment has no more pages)."""

    records: Records
    position: str | None


class Store(Protocol):
    """What the proxy needs from a data store. Keys and records are canonical values."""

    async def get(self, key: Any, fields: Sequence[str] | None = None) -> Record | None: ...

    async def get_compared(self, key: Any, fields: Sequence[str] | None = None) -> Any:
        """``schema.to_json(get(key, fields), fields=fields, drift=True)``, or None: the
        record as a comparison reads it, and (``compared.without_drift``) as a client does."""
        ...

    async def query_index(self, index: str, value: Any, limit: int) -> Records: ...

    async def list(
        self, filters: Mapping[str, Any], limit: int, cursor: str | None = None
    ) -> tuple[Records, str | None]: ...

    async def create(self, record: Record) -> None: ...

    async def put(self, record: Record) -> None: ...

    async def update(self, key: Any, changes: Mapping[str, Any]) -> Record: ...

    async def delete(self, key: Any) -> None: ...

    async def batch_put(self, records: Sequence[Record]) -> ItemResults: ...

    async def batch_get(self, keys: Sequence[Any]) -> Records: ...

    def scan_pages(
        self, segment: int, total_segments: int, *, after: str | None = None
    ) -> AsyncIterator[ScanPage]:
        """The segment's records a page at a time, resuming after a page's ``position``.
        The segments of one ``total_segments`` partition the table."""
        ...

    async def close(self) -> None: ...


class ManagedStore(Store, Protocol):
    """A store with its lifecycle: ``open`` connects (pool, client), ``init`` creates what is
    missing (table, columns, indexes) idempotently, ``close`` releases."""

    async def open(self) -> None: ...

    async def init(self) -> None: ...
