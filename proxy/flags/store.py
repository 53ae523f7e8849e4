"""Flag stores: where the live flags are kept, changed (validated, checked, audited) and
watched.

    store = RedisFlagStore(url, "shadowproxy:flags", initial_snapshot(settings), None,
                           topology=FlagTopology.from_settings(settings))
    await store.start()
    flags = store.snapshot()                          # sync, one attribute read: per request
    entry = await store.set("users", "read_from", "dynamodb", actor="cli:alice",
                            reason="readiness green for 3 days", check=readiness_check)
    off = store.on_change(lambda change: ...)         # every change, local or remote
    await store.close()

Every change goes through ``set()``: ``apply`` (coercion), ``validate`` against this
instance's topology (unsafe flips are refused, ``force`` never overrides that), then the
optional async ``check(target, old_state, new_state)`` which refuses by raising (the
readiness gate plugs in there; ``force=True`` skips it and needs a reason), then the write
and its audit entry. A refused change leaves both state and audit untouched. A change to the
value a flag already has writes nothing and returns an entry with ``old == new``.

``MemoryFlagStore`` serves one process; its initial state is the config. At ``start()`` it
audits (actor ``config``) every config value that differs from the last value the audit log
recorded for that flag, so a restart that reverts a runtime flip is in the history.

``RedisFlagStore`` (``proxy.flags.redis_store``) keeps the state in Redis for a fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from comparators.errors import ShadowProxyError
from proxy.flags.audit import AuditEntry, AuditLog
from proxy.flags.model import (
    RESOURCE_FLAGS,
    ROUTE_FLAGS,
    FlagError,
    FlagSnapshot,
    FlagState,
    ResourceFlagState,
    apply,
    changed_flags,
    flag_kind,
    flag_value,
    iter_flags,
)
from proxy.flags.topology import FlagTopology

log = logging.getLogger("shadowproxy.flags")
MAX_REASON = 1000  # characters: an audit entry is a sentence, not a document

Check = Callable[[str, FlagState, FlagState], Awaitable[None]]
ChangeListener = Callable[["FlagChange"], None]
HealthListener = Callable[[bool, str | None], None]


class FlagStoreError(ShadowProxyError):
    """The flag store could not carry out a change (nothing was changed)."""


class FlagStoreUnavailable(FlagStoreError):
    """The shared flag store cannot be reached; the change was NOT applied."""


class FlagConflict(FlagStoreError):
    """Other writers kept changing the flags while this change was being made."""


@dataclass(frozen=True)
class FlagChange:
    """What listeners receive. ``entries`` are the audit entries when this process made the
    change; a change seen from another instance has none (its writer counted it)."""

    old: FlagSnapshot
    new: FlagSnapshot
    entries: tuple[AuditEntry, ...] = ()

    @property
    def changed(self) -> list[tuple[str, str, Any, Any]]:
        """``(target, flag, old value, new value)`` for every flag that differs."""
        return changed_flags(self.old, self.new)


class FlagStore(Protocol):
    @property
    def healthy(self) -> bool: ...

    @property
    def last_error(self) -> str | None: ...

    def snapshot(self) -> FlagSnapshot: ...

    async def set(
        self,
        target: str,
        flag: str,
        raw_value: Any,
        *,
        actor: str,
        reason: str,
        force: bool = False,
        check: Check | None = None,
    ) -> AuditEntry: ...

    async def history(self, limit: int, target: str | None = None) -> list[AuditEntry]: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def on_change(self, callback: ChangeListener) -> Callable[[], None]: ...

    def on_health(self, callback: HealthListener) -> Callable[[], None]: ...


class BaseFlagStore:
    """What both stores share: the snapshot, listeners, and preparing a change (coerce,
    validate, check, audit entry). Each store adds only where the state is kept."""

    def __init__(
        self, initial: FlagSnapshot, audit: AuditLog, topology: FlagTopology | None
    ) -> None:
        self._initial = initial
        self._snapshot = initial
        self._audit = audit
        self.topology = topology if topology is not None else FlagTopology.from_snapshot(initial)
        self._listeners: list[ChangeListener] = []
        self._health_listeners: list[HealthListener] = []
        self._healthy = True
        self._last_error: str | None = None

    # --- reading -------------------------------------------------------------------------

    def snapshot(self) -> FlagSnapshot:
        return self._snapshot

    @property
    def healthy(self) -> bool:
        return self._healthy

    @property
    def last_error(self) -> str | None:
        return self._last_error

    async def history(self, limit: int, target: str | None = None) -> list[AuditEntry]:
        return await self._audit.history(limit, target)

    # --- listeners -----------------------------------------------------------------------

    def on_change(self, callback: ChangeListener) -> Callable[[], None]:
        """Call ``callback(FlagChange)`` after every change (sync, in the event loop; an
        exception is logged, not raised). Returns the function that unsubscribes."""
        self._listeners.append(callback)
        return lambda: _discard(self._listeners, callback)

    def on_health(self, callback: HealthListener) -> Callable[[], None]:
        """Call ``callback(healthy, last_error)`` whenever ``healthy`` flips."""
        self._health_listeners.append(callback)
        return lambda: _discard(self._health_listeners, callback)

    def _publish(self, new: FlagSnapshot, entries: tuple[AuditEntry, ...] = ()) -> None:
        old = self._snapshot
        if new == old and not entries:
            return
        self._snapshot = new
        change = FlagChange(old=old, new=new, entries=entries)
        for callback in list(self._listeners):
            try:
                callback(change)
            except Exception:
                log.exception("flag change listener failed")

    def _set_health(self, healthy: bool, error: str | None) -> None:
        was = self._healthy
        self._healthy = healthy
        self._last_error = error
        if was == healthy:
            return
        for callback in list(self._health_listeners):
            try:
                callback(healthy, error)
            except Exception:
                log.exception("flag store health listener failed")

    # --- changing ------------------------------------------------------------------------

    async def _prepare(
        self,
        current: FlagSnapshot,
        target: str,
        flag: str,
        raw_value: Any,
        *,
        actor: str,
        reason: str,
        force: bool,
        check: Check | None,
    ) -> tuple[FlagState, AuditEntry, bool]:
        """``(new state, entry, changed)``; raises FlagError (or whatever ``check`` raises)
        when the change is refused."""
        if not actor.strip():
            raise FlagError("a flag change needs an actor")
        if force and not reason.strip():
            raise FlagError("a forced flag change needs a reason")
        if len(reason) > MAX_REASON:
            raise FlagError(f"the reason is {len(reason)} characters; at most {MAX_REASON}")
        flag_kind(flag)
        old_state = current.state(target, flag)
        new_state = apply(current, target, flag, raw_value)
        old_value, new_value = flag_value(old_state, flag), flag_value(new_state, flag)
        entry = AuditEntry(
            time=time.time(),
            actor=actor,
            target=target,
            flag=flag,
            old=old_value,
            new=new_value,
            reason=reason,
            forced=force,
        )
        if new_state == old_state:
            return new_state, entry, False
        self.topology.validate(target, new_state)
        if check is not None and not force:
            await check(target, old_state, new_state)
        return new_state, entry, True


def _discard(items: list[Any], item: Any) -> None:
    with contextlib.suppress(ValueError):
        items.remove(item)


def state_dict(state: FlagState) -> dict[str, Any]:
    flags = RESOURCE_FLAGS if isinstance(state, ResourceFlagState) else ROUTE_FLAGS
    return {flag: flag_value(state, flag) for flag in flags}


def config_entries(
    base: FlagSnapshot, previous: Mapping[tuple[str, str], Any], actor: str, reason: str
) -> list[AuditEntry]:
    now = time.time()
    return [
        AuditEntry(now, actor, target, flag, previous.get((target, flag)), value, reason)
        for target, flag, value in iter_flags(base)
        if (target, flag) not in previous or previous[(target, flag)] != value
    ]


# --- one process -------------------------------------------------------------------------


class MemoryFlagStore(BaseFlagStore):
    """Flags of one process, initially the config. ``close()`` closes the audit log."""

    def __init__(
        self,
        initial: FlagSnapshot,
        audit: AuditLog,
        *,
        topology: FlagTopology | None = None,
        audit_config_defaults: bool = True,
    ) -> None:
        super().__init__(initial, audit, topology)
        self._lock = asyncio.Lock()
        self._audit_config_defaults = audit_config_defaults

    async def start(self) -> None:
        """Audit the config values that differ from the audit log's last word on each flag
        (pass ``audit_config_defaults=False`` in all worker processes but one)."""
        if not self._audit_config_defaults:
            return
        previous: dict[tuple[str, str], Any] = {}
        for entry in reversed(await self._audit.history(100_000)):
            previous[(entry.target, entry.flag)] = entry.new
        entries = config_entries(self._snapshot, previous, "config", "config default at start")
        for entry in entries:
            await self._audit.append(entry)
        if entries:
            self._publish(self._snapshot, tuple(entries))

    async def set(
        self,
        target: str,
        flag: str,
        raw_value: Any,
        *,
        actor: str,
        reason: str,
        force: bool = False,
        check: Check | None = None,
    ) -> AuditEntry:
        async with self._lock:
            current = self._snapshot
            state, entry, changed = await self._prepare(
                current,
                target,
                flag,
                raw_value,
                actor=actor,
                reason=reason,
                force=force,
                check=check,
            )
            if not changed:
                return entry
            await self._audit.append(entry)  # raises: nothing changed
            self._publish(current.with_target(target, state, version=current.version + 1), (entry,))
            return entry

    async def close(self) -> None:
        await self._audit.close()
