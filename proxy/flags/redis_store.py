"""Flags shared by a fleet through Redis: one state hash, compare-and-set, a change channel.

Over 400 lines on purpose: it is one class whose compare-and-set, watcher and reconnect
logic share one state machine (version, epoch, health); split, each part would reach into
the others' fields.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import RedisError

from proxy.flags.audit import AuditEntry, AuditLog, RedisAuditLog
from proxy.flags.model import (
    FlagError,
    FlagSnapshot,
    FlagState,
    ResourceFlagState,
    RouteFlagState,
    changed_flags,
    snapshot_from_doc,
    snapshot_to_doc,
)
from proxy.flags.store import (
    BaseFlagStore,
    Check,
    FlagConflict,
    FlagStoreError,
    FlagStoreUnavailable,
    config_entries,
    state_dict,
)
from proxy.flags.topology import FlagTopology
from proxy.redis_client import redis_client
from proxy.tasks import cancel, spawn

log = logging.getLogger("shadowproxy.flags")


# --- a fleet, through Redis --------------------------------------------------------------

# KEYS[1] state hash, KEYS[2] audit list (optional). ARGV: expected version ("0" = no state),
# expected epoch ("" = none), new doc, new epoch ("" = keep), audit maxlen, entries...
# Returns the new version, or -1 when the state moved on since it was read.
_CAS_SCRIPT = """
local cur = redis.call('HMGET', KEYS[1], 'version', 'epoch')
local version = cur[1] or '0'
local epoch = cur[2] or ''
if version ~= ARGV[1] or epoch ~= ARGV[2] then
  return -1
end
local nextv = tonumber(version) + 1
redis.call('HSET', KEYS[1], 'version', tostring(nextv), 'doc', ARGV[3])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[4])
end
if #KEYS > 1 and #ARGV > 5 then
  for i = 6, #ARGV do
    redis.call('LPUSH', KEYS[2], ARGV[i])
  end
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[5]) - 1)
end
return nextv
"""
_MAX_CAS_ATTEMPTS = 20


@dataclass(frozen=True)
class _Stored:
    version: int  # 0: no state in Redis
    epoch: str
    doc: dict[str, Any]


class RedisFlagStore(BaseFlagStore):
    """Flags shared by every instance through Redis.

    Keys (``{prefix}`` from config)::

        {prefix}:state   hash: version (decimal counter), epoch (id of this state's
                         lifetime, new whenever the state is seeded), doc (JSON of every
                         target's flags, see ``snapshot_to_doc``)
        {prefix}:audit   list of JSON audit entries, newest first, capped (the default
                         audit log; a RedisAuditLog given as ``audit`` uses its own key)

    Every instance polls ``HMGET {prefix}:state version epoch`` each ``poll_seconds`` and
    reloads the doc when either changed, so a flip reaches every instance within
    ``poll_seconds`` plus one round trip. Writes are one Lua script that compares version and
    epoch with what the writer read and only then writes the doc, bumps the version and
    pushes the audit entries: two concurrent writers cannot lose an update (the loser
    re-reads, re-validates, re-checks and retries).

    Config is only the default: at ``start()`` a Redis without state is seeded from
    ``initial`` (audited as actor ``config``), and targets the config declares but Redis lacks
    are added; when Redis already holds a target's flags, Redis wins. A stored target that is
    unsafe under this instance's config (e.g. names a store it does not declare) is not
    served: the instance keeps its previous flags for that target and reports it in
    ``last_error``.

    When Redis is unreachable (also at start) the instance keeps its last known flags (the
    config before the first successful sync), ``healthy`` is False, ``last_error`` says why,
    and it keeps polling; when Redis answers again it resyncs. ``set()`` meanwhile raises
    ``FlagStoreUnavailable``. If Redis comes back empty (restarted without persistence), the
    first instance to notice re-seeds it with its last known flags (actor ``restore``).

    ``audit``: ``None`` or a ``RedisAuditLog`` on the same Redis (entries are written in the
    same transaction as the change), or any other ``AuditLog`` (appended after the change is
    committed; a failure there is logged, the change stands).
    """

    def __init__(
        self,
        url: str,
        prefix: str,
        initial: FlagSnapshot,
        audit: AuditLog | None = None,
        *,
        topology: FlagTopology | None = None,
        poll_seconds: float = 0.25,
        timeout_seconds: float = 1.0,
        audit_maxlen: int = 10_000,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.state_key = f"{prefix}:state"
        self._redis = redis_client(url, timeout_seconds)
        if audit is None:
            audit = RedisAuditLog(self._redis, f"{prefix}:audit", maxlen=audit_maxlen)
        super().__init__(initial, audit, topology)
        self._tx_audit = audit if isinstance(audit, RedisAuditLog) else None
        self._cas = self._redis.register_script(_CAS_SCRIPT)
        self._poll_seconds = poll_seconds
        self._epoch = ""
        self._synced = False
        self._state_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._sync_lock = asyncio.Lock()

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Sync once (seeding Redis if needed), then poll in the background. Does not fail
        when Redis is down: see the class docstring."""
        if self._task is not None:
            return
        try:
            await self._sync()
        except (RedisError, OSError) as e:
            self._lost(e)
        except Exception as e:
            self._lost(e, unreachable=False)
        self._task = spawn(self._poll_forever(), name=f"flag-store-poll:{self.prefix}")

    async def close(self) -> None:
        if self._task is not None:
            self._closing = True
            await cancel(self._task)  # redis-py may swallow the first cancellation
            self._task = None
        await self._audit.close()  # the default log shares (and does not close) our client
        await self._redis.aclose()

    # --- polling -------------------------------------------------------------------------

    async def _poll_forever(self) -> None:
        while not self._closing:
            await asyncio.sleep(self._poll_seconds)
            try:
                await self.poll()
            except (RedisError, OSError) as e:
                self._lost(e)
            except Exception as e:  # a malformed stored document, a bug: keep polling
                self._lost(e, unreachable=False)

    async def poll(self) -> None:
        """One poll: a cheap version check, a reload when it moved (public for tests)."""
        if not self._synced:
            await self._sync()
            return
        raw = await self._redis.hmget(self.state_key, ["version", "epoch"])
        version = int(raw[0]) if raw[0] is not None else 0
        epoch = _text(raw[1])
        if version == 0 or epoch != self._epoch or version > self._snapshot.version:
            await self._sync()
        else:
            self._found()

    def _lost(self, error: BaseException, *, unreachable: bool = True) -> None:
        what = "unreachable" if unreachable else "unusable"
        message = f"flag store Redis {self.state_key} {what}: {error!r}"
        if self._healthy or (not unreachable and message != self._last_error):
            log.error(
                "%s; keeping the last known flags (version %d)",
                message,
                self._snapshot.version,
                exc_info=None if unreachable else error,
            )
        self._set_health(False, message)

    def _found(self) -> None:
        if not self._healthy:
            log.warning("flag store Redis %s reachable again; flags resynced", self.state_key)
        self._set_health(True, self._state_error)

    async def _read(self) -> _Stored:
        raw = await self._redis.hmget(self.state_key, ["version", "epoch", "doc"])
        if raw[0] is None or raw[2] is None:
            return _Stored(0, "", {})
        try:
            doc = orjson.loads(raw[2])
        except orjson.JSONDecodeError as e:
            raise FlagStoreError(f"{self.state_key}: the stored flag document is not JSON") from e
        if not isinstance(doc, dict):
            raise FlagStoreError(f"{self.state_key}: the stored flag document is not an object")
        return _Stored(int(raw[0]), _text(raw[1]), doc)

    async def _write(
        self, stored: _Stored, doc: Mapping[str, Any], entries: list[AuditEntry], new_epoch: str
    ) -> int:
        """The new version, or -1 when the state moved on since ``stored`` was read."""
        keys = [self.state_key]
        args: list[Any] = [
            str(stored.version),
            stored.epoch,
            orjson.dumps(doc),
            new_epoch,
            self._tx_audit.maxlen if self._tx_audit is not None else 0,
        ]
        if self._tx_audit is not None and entries:
            keys.append(self._tx_audit.key)
            args.extend(entry.to_json() for entry in entries)
        return int(await self._cas(keys=keys, args=args))

    async def _sync(self) -> None:
        """Read the stored state; seed it or add this config's missing targets; serve it."""
        async with self._sync_lock:
            for _ in range(_MAX_CAS_ATTEMPTS):
                stored = await self._read()
                if stored.version == 0:
                    if self._synced:
                        base, actor = self._snapshot, "restore"
                        reason = "flag state missing in Redis: restored this instance's flags"
                    else:
                        base, actor = self._initial, "config"
                        reason = "seeded from config: Redis held no flags"
                    entries = config_entries(base, {}, actor, reason)
                    epoch = uuid.uuid4().hex
                    version = await self._write(stored, snapshot_to_doc(base), entries, epoch)
                    if version < 0:
                        continue
                    loaded = snapshot_from_doc(version, snapshot_to_doc(base))
                    self._accept(loaded, epoch, tuple(entries), log_differences=False)
                    return
                needed = self._initial if not self._synced else self._snapshot
                missing = _missing_targets(stored.doc, needed, self._initial)
                if missing.resources or missing.routes:
                    actor = "config" if not self._synced else "restore"
                    reason = "target missing from the stored flags: added from config"
                    doc, entries = _with_targets(stored.doc, missing, actor, reason)
                    version = await self._write(stored, doc, entries, "")
                    if version < 0:
                        continue
                    loaded = snapshot_from_doc(version, doc)
                    self._accept(loaded, stored.epoch, tuple(entries), log_differences=True)
                    return
                loaded = snapshot_from_doc(stored.version, stored.doc)
                self._accept(loaded, stored.epoch, (), log_differences=not self._synced)
                return
            raise FlagConflict("the stored flags kept changing while syncing; will retry")

    def _accept(
        self,
        loaded: FlagSnapshot,
        epoch: str,
        entries: tuple[AuditEntry, ...],
        *,
        log_differences: bool,
    ) -> None:
        if log_differences:
            differing = [
                f"{t}.{f} = {new!r} (config: {old!r})"
                for t, f, old, new in changed_flags(self._initial, loaded)
                if old is not None and new is not None
            ]
            if differing:
                log.info("stored flags differ from config; Redis wins: %s", "; ".join(differing))
        if epoch == self._epoch and loaded.version < self._snapshot.version:
            self._found()
            return  # an older read than what a local set() already published
        self._epoch = epoch
        self._synced = True
        self._publish(self._served(loaded), entries)
        self._found()

    def _served(self, loaded: FlagSnapshot) -> FlagSnapshot:
        """``loaded``, except targets unsafe under this config keep their previous flags and
        this config's targets Redis lacks keep theirs (reported in ``last_error``)."""
        errors: list[str] = []
        served = loaded
        for name, resource_state in loaded.resources.items():
            if name in self.topology.resources:
                served = self._checked(served, name, resource_state, "resources", errors)
        for name, route_state in loaded.routes.items():
            if name in self._initial.routes:
                served = self._checked(served, name, route_state, "routes", errors)
        for name, state in self._snapshot.resources.items():
            if name not in served.resources:
                served = served.with_target(name, state)
        for name, route in self._snapshot.routes.items():
            if name not in served.routes:
                served = served.with_target(name, route)
        error = "; ".join(errors) or None
        if error and error != self._state_error:
            log.error("stored flags refused, keeping the previous ones: %s", error)
        self._state_error = error
        return served

    def _checked(
        self,
        served: FlagSnapshot,
        name: str,
        state: ResourceFlagState | RouteFlagState,
        kind: str,
        errors: list[str],
    ) -> FlagSnapshot:
        try:
            self.topology.validate(name, state)
            return served
        except FlagError as e:
            errors.append(f"stored flags of {name}: {e}")
            previous: Mapping[str, FlagState] = getattr(self._snapshot, kind)
            if name in previous:
                return served.with_target(name, previous[name])
            return served

    # --- changing ------------------------------------------------------------------------

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
        if self._task is None:
            raise FlagStoreError("the flag store is not started")
        for _ in range(_MAX_CAS_ATTEMPTS):
            try:
                stored = await self._read()
            except (RedisError, OSError) as e:
                self._lost(e)
                raise FlagStoreUnavailable(
                    f"cannot change {target}.{flag}: the flag store (Redis) is unreachable "
                    f"({e}); nothing was changed"
                ) from e
            if stored.version == 0:
                raise FlagStoreUnavailable(
                    f"cannot change {target}.{flag}: Redis holds no flag state (being "
                    "re-seeded); nothing was changed, try again"
                )
            current = snapshot_from_doc(stored.version, stored.doc)
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
            section = "resources" if isinstance(state, ResourceFlagState) else "routes"
            doc = _replace_target(stored.doc, section, target, state_dict(state))
            try:
                version = await self._write(stored, doc, [entry], "")
            except (RedisError, OSError) as e:
                self._lost(e)
                raise FlagStoreUnavailable(
                    f"cannot change {target}.{flag}: the flag store (Redis) failed during the "
                    f"write ({e}); the change may or may not have been applied — check "
                    "`flags show`"
                ) from e
            if version < 0:
                continue
            self._accept(
                snapshot_from_doc(version, doc), stored.epoch, (entry,), log_differences=False
            )
            if self._tx_audit is None:
                try:
                    await self._audit.append(entry)
                except Exception:
                    log.exception("flag change committed but its audit entry was not written")
            return entry
        raise FlagConflict(
            f"cannot change {target}.{flag}: the flags kept changing under concurrent "
            "writers; nothing was changed, try again"
        )


def _text(raw: bytes | str | None) -> str:
    if raw is None:
        return ""
    return raw.decode() if isinstance(raw, bytes) else raw


def _missing_targets(
    doc: Mapping[str, Any], needed: FlagSnapshot, config: FlagSnapshot
) -> FlagSnapshot:
    """The targets of ``config`` absent from ``doc``, with their flags from ``needed``."""
    resources = doc.get("resources") or {}
    routes = doc.get("routes") or {}
    return FlagSnapshot(
        version=0,
        resources={
            n: needed.resources.get(n, s) for n, s in config.resources.items() if n not in resources
        },
        routes={n: needed.routes.get(n, s) for n, s in config.routes.items() if n not in routes},
    )


def _with_targets(
    doc: Mapping[str, Any], missing: FlagSnapshot, actor: str, reason: str
) -> tuple[dict[str, Any], list[AuditEntry]]:
    added = snapshot_to_doc(missing)
    out = {
        **doc,
        "resources": {**(doc.get("resources") or {}), **added["resources"]},
        "routes": {**(doc.get("routes") or {}), **added["routes"]},
    }
    return out, config_entries(missing, {}, actor, reason)


def _replace_target(
    doc: Mapping[str, Any], section: str, target: str, spec: Mapping[str, Any]
) -> dict[str, Any]:
    """``doc`` with one target's flags replaced; keys this version does not know survive."""
    targets = dict(doc.get(section) or {})
    previous = targets.get(target)
    targets[target] = {**(previous if isinstance(previous, dict) else {}), **spec}
    return {**doc, section: targets}
