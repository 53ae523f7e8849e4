"""Typed resource storage: the schema contract, canonical codecs, PostgreSQL and DynamoDB.

``asyncpg`` is imported only by ``proxy.store.postgres`` and the DynamoDB client
(``proxy.store.dynamo_http``) only by ``proxy.store.dynamodb``: import those modules where a
store is built, not from here.
"""

from proxy.store.base import (
    InvalidCursor,
    InvalidRecord,
    ItemResult,
    KeyConflict,
    LimitExceeded,
    ManagedStore,
    Record,
    RecordNotFound,
    Store,
    StoreBusy,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
    Throttled,
)
from proxy.store.fieldtypes import FieldType, Malformed
from proxy.store.retry import RetryPolicy
from proxy.store.schema import (
    FieldConfig,
    FieldError,
    IndexConfig,
    ResourceConfig,
    Schema,
    SchemaError,
    StoreTableConfig,
)

__all__ = [
    "FieldConfig",
    "FieldError",
    "FieldType",
    "IndexConfig",
    "InvalidCursor",
    "InvalidRecord",
    "ItemResult",
    "KeyConflict",
    "LimitExceeded",
    "Malformed",
    "ManagedStore",
    "Record",
    "RecordNotFound",
    "ResourceConfig",
    "RetryPolicy",
    "Schema",
    "SchemaError",
    "Store",
    "StoreBusy",
    "StoreError",
    "StoreTableConfig",
    "StoreTimeout",
    "StoreUnavailable",
    "Throttled",
]
