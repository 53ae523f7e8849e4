"""Live flags: the model (``model``), what they may point at (``topology``), the audit trail
(``audit``), the store protocol and the one-process store (``store``), the fleet's store
(``redis_store``), their metrics (``metrics``) and the wiring from config (``setup``,
``config``)."""

from proxy.flags.audit import (
    AuditEntry,
    AuditLog,
    FileAuditLog,
    MemoryAuditLog,
    RedisAuditLog,
    actor_kind,
)
from proxy.flags.config import FlagStoreConfig
from proxy.flags.metrics import FlagMetrics
from proxy.flags.model import (
    FlagError,
    FlagSnapshot,
    FlagState,
    InvalidFlagValue,
    ResourceFlagState,
    RouteFlagState,
    UnknownFlag,
    UnsafeFlip,
    apply,
    parse_assignment,
    parse_name,
    read_store,
    sticky_share,
    validate,
)
from proxy.flags.redis_store import RedisFlagStore
from proxy.flags.setup import initial_snapshot, make_flag_store, topology_from_settings
from proxy.flags.store import (
    Check,
    FlagChange,
    FlagConflict,
    FlagStore,
    FlagStoreError,
    FlagStoreUnavailable,
    MemoryFlagStore,
)
from proxy.flags.topology import FlagTopology, ResourceTopology

__all__ = [
    "AuditEntry",
    "AuditLog",
    "Check",
    "FileAuditLog",
    "FlagChange",
    "FlagConflict",
    "FlagError",
    "FlagMetrics",
    "FlagSnapshot",
    "FlagState",
    "FlagStore",
    "FlagStoreConfig",
    "FlagStoreError",
    "FlagStoreUnavailable",
    "FlagTopology",
    "InvalidFlagValue",
    "MemoryAuditLog",
    "MemoryFlagStore",
    "RedisAuditLog",
    "RedisFlagStore",
    "ResourceFlagState",
    "ResourceTopology",
    "RouteFlagState",
    "UnknownFlag",
    "UnsafeFlip",
    "actor_kind",
    "apply",
    "initial_snapshot",
    "make_flag_store",
    "parse_assignment",
    "parse_name",
    "read_store",
    "sticky_share",
    "topology_from_settings",
    "validate",
]
