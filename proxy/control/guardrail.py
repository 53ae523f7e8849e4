"""The guardrail: while reads are served by the new store, watch them; when the new store's
error rate or the mismatch rate (measured against the old store as shadow) crosses its
threshold within the watch period, undo the change by itself, audited as ``guardrail``.

A watch is armed by every change that makes the new store serve reads, by anyone:

- ``read_from`` set to the new store: a rollback sets ``read_from`` back to the store reads
  came from;
- ``new_store_read_fraction`` set above 0 (a canary; each new fraction arms afresh): a
  rollback sets it back to 0.

It counts the shadowed reads the new store served (``new_side == "primary"``): their
comparisons and the new store's failures. A difference the comparison CPU budget could not
judge (``comparators.UNJUDGED``) counts as a mismatch: the guardrail errs towards the old
store, and in store mode such a difference was already unequal in value.

With ``readiness.store: redis`` the counts are summed over every instance
(``proxy.control.guardrail_tally``): each instance adds its counts every
``flush_interval_seconds`` and judges the fleet's totals; while Redis cannot be reached it
judges its own. Otherwise each process judges its own counts at every read.

Each rollback this process made is counted in ``shadowproxy_guardrail_rollbacks_total{target}``
(``GuardrailMetrics``), whose series exist at 0 from the start for every guarded target, so
``increase()`` sees the first rollback too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from comparators.comparison import UNJUDGED
from comparators.model import Comparison, Outcome
from proxy.control.guardrail_tally import FleetTally, Tally
from proxy.experiment.publish import Experiment
from proxy.flags import ResourceFlagState
from proxy.flags.store import FlagChange, FlagStore
from proxy.logs import Throttle
from proxy.settings import GuardrailSettings
from proxy.tasks import spawn

log = logging.getLogger("shadowproxy.guardrail")

COMPARED = frozenset({Outcome.MATCH, Outcome.MISMATCH, Outcome.TRANSIENT, Outcome.NOISE})
READ_FLIP, CANARY = "read_from", "canary"
ERROR_LOG_SECONDS = 60.0


@dataclass
class Watch:
    kind: str  # READ_FLIP or CANARY
    signature: str  # the same episode has the same signature on every instance
    old_store: str  # where a read flip goes back to
    new_store: str
    until: float
    fraction: float = 0.0  # a canary's new_store_read_fraction
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    joined: bool = False  # the fleet's watch (id, until) is known
    local: Tally = field(default_factory=Tally)  # this instance's counts
    pending: Tally = field(default_factory=Tally)  # counted here, not yet added to the fleet's
    fired: bool = False

    def crossed(self, config: GuardrailSettings, seen: Tally, where: str) -> str | None:
        """Why to roll back, or None. ``where`` says whose reads ``seen`` counts."""
        reads = seen.reads
        if reads < config.min_comparisons:
            return None
        what = (
            f"canary (new_store_read_fraction {self.fraction:g})"
            if self.kind == CANARY
            else "new primary"
        )
        error_rate = seen.primary_errors / reads
        if error_rate > config.max_primary_error_rate:
            return (
                f"{what} {self.new_store} error rate {error_rate:.2%} over {reads} reads"
                f"{where} > {config.max_primary_error_rate:.2%}"
            )
        if seen.comparisons and (rate := seen.mismatches / seen.comparisons) > (
            config.max_mismatch_rate
        ):
            return (
                f"{what} {self.new_store} mismatch rate {rate:.2%} over {seen.comparisons} "
                f"comparisons against {self.old_store}{where} > {config.max_mismatch_rate:.2%}"
            )
        return None


@dataclass(frozen=True)
class GuardrailMetrics:
    rollbacks: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> GuardrailMetrics:
        return cls(
            rollbacks=Counter(
                "shadowproxy_guardrail_rollbacks",
                "Changes the guardrail rolled back (a read flip or a canary), by target.",
                ("target",),
                registry=registry,
            )
        )


def _signature(state: ResourceFlagState, new_store: str | None) -> tuple[str, str] | None:
    """``(kind, signature)`` when ``state`` has the new store serve reads, else None."""
    if new_store is None:
        return None
    if state.read_from == new_store:
        return READ_FLIP, f"read_from={new_store}"
    if state.new_store_read_fraction > 0 and new_store in state.write_to:
        return CANARY, f"canary={state.new_store_read_fraction!r}"
    return None


def _counted(comparison: Comparison) -> Tally | None:
    if comparison is UNJUDGED:
        return Tally(1, 1, 0)
    outcome = comparison.outcome
    if outcome in COMPARED:
        return Tally(1, int(outcome is Outcome.MISMATCH), 0)
    if outcome is Outcome.PRIMARY_ERROR:
        return Tally(0, 0, 1)
    return None


class Guardrail:
    def __init__(
        self,
        *,
        flag_store: FlagStore,
        settings: Mapping[str, GuardrailSettings],
        new_stores: Mapping[str, str | None],
        tally: FleetTally | None = None,
        flush_interval_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
        metrics: GuardrailMetrics | None = None,
    ) -> None:
        self._flags = flag_store
        self._settings = {k: v for k, v in settings.items() if v.enabled}
        self._rollbacks = None if metrics is None else metrics.rollbacks
        if metrics is not None:
            for target in self._settings:
                metrics.rollbacks.labels(target)  # exported at 0 before the first rollback
        self._new_stores = new_stores
        self._tally = tally
        self._interval = flush_interval_seconds
        self._clock = clock
        self.watches: dict[str, Watch] = {}
        self._ended: list[tuple[str, str]] = []  # (target, fleet watch id) to forget
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[Any] | None = None
        self._log_throttle = Throttle(ERROR_LOG_SECONDS)

    # --- arming ---------------------------------------------------------------------------

    def on_change(self, change: FlagChange) -> None:
        for target, config in self._settings.items():
            old = change.old.resources.get(target)
            new = change.new.resources.get(target)
            if old is None or new is None:
                continue
            new_store = self._new_stores.get(target)
            before, after = _signature(old, new_store), _signature(new, new_store)
            if after == before:
                continue
            self._disarm(target)
            if after is None or new_store is None:
                continue
            kind, signature = after
            self.watches[target] = Watch(
                kind,
                signature,
                old.read_from if kind == READ_FLIP else new.read_from,
                new_store,
                self._clock() + config.watch_seconds,
                fraction=new.new_store_read_fraction,
            )
            log.warning(
                "guardrail armed: reads flipped to the new store"
                if kind == READ_FLIP
                else "guardrail armed: a canary reads from the new store",
                extra={"resource": target, "store": new_store, "watch": config.watch_seconds,
                       "signature": signature},
            )  # fmt: skip

    def _disarm(self, target: str) -> None:
        watch = self.watches.pop(target, None)
        if watch is not None and watch.joined:
            self._ended.append((target, watch.id))

    # --- counting -------------------------------------------------------------------------

    def observe(self, exp: Experiment) -> None:
        """Called for every finished comparison (cheap; on the event loop)."""
        watch = self.watches.get(exp.route)
        if watch is None or watch.fired or exp.new_side != "primary":
            return
        if self._clock() > watch.until:
            self._expire(exp.route, watch)
            return
        delta = _counted(exp.comparison)
        if delta is None:
            return
        watch.local += delta
        if self._tally is None:
            self._judge(exp.route, watch, watch.local, "")
        else:
            watch.pending += delta

    def _expire(self, target: str, watch: Watch) -> None:
        if self.watches.get(target) is watch:
            self._disarm(target)
            log.info("guardrail watch ended without a rollback", extra={"resource": target})

    def _judge(self, target: str, watch: Watch, seen: Tally, where: str) -> None:
        if watch.fired or self.watches.get(target) is not watch:
            return
        reason = watch.crossed(self._settings[target], seen, where)
        if reason is not None:
            watch.fired = True
            spawn(self._roll_back(target, watch, reason), name=f"guardrail-{target}")

    # --- the fleet's counts ---------------------------------------------------------------

    def start(self) -> None:
        """Start adding counts to the fleet's (only with a fleet tally; idempotent)."""
        if self._tally is None or self._task is not None:
            return
        self._stop = asyncio.Event()
        self._task = spawn(self._run(self._stop), name="guardrail-flush")

    async def _run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)
            await self.flush()

    async def flush(self, *, judge: bool = True) -> None:
        """Forget ended watches, join new ones, add pending counts and judge the fleet's."""
        if self._tally is None:
            return
        tally = self._tally
        ended, self._ended = self._ended, []
        for target, id in ended:
            with contextlib.suppress(Exception):
                await tally.end(target, id)
        for target, watch in list(self.watches.items()):
            if self._clock() > watch.until:
                self._expire(target, watch)
                continue
            try:
                seen = await self._add(tally, target, watch)
            except Exception as e:
                self._failed(target, e)
                if judge:
                    self._judge(target, watch, watch.local, " on this instance (Redis failed)")
                continue
            if judge and seen is not None:
                self._judge(target, watch, seen, " on every instance")

    async def _add(self, tally: FleetTally, target: str, watch: Watch) -> Tally | None:
        now = self._clock()
        if not watch.joined:
            joined = await tally.join(
                target, watch.signature, id=watch.id, until=watch.until, now=now
            )
            watch.id, watch.until, watch.joined = joined.id, joined.until, True
        if not watch.pending:
            return None
        delta, watch.pending = watch.pending, Tally()
        try:
            return await tally.add(target, watch.id, delta, until=watch.until, now=now)
        except BaseException:
            watch.pending += delta  # added with the next flush (or counted twice, rarely)
            raise

    def _failed(self, target: str, error: Exception) -> None:
        if self._log_throttle.ready():
            log.warning(
                "guardrail counts could not be added to the fleet's; judging this instance's",
                extra={"resource": target, "error": f"{type(error).__name__}: {error}"},
            )

    async def close(self) -> None:
        """Stop the flush loop; add what is left (without judging); close the tally."""
        if self._stop is not None and self._task is not None:
            self._stop.set()
            with contextlib.suppress(Exception):
                await self._task
            self._task = None
        if self._tally is not None:
            with contextlib.suppress(Exception):
                await self.flush(judge=False)
            await self._tally.close()

    # --- rolling back ---------------------------------------------------------------------

    async def _roll_back(self, target: str, watch: Watch, reason: str) -> None:
        value: str | float
        if watch.kind == CANARY:
            flag, value, what = "new_store_read_fraction", 0.0, "ending the canary"
        else:
            flag, value, what = "read_from", watch.old_store, "flipping reads back to the old store"
        log.error(
            f"GUARDRAIL: {what}",
            extra={"resource": target, "flag": flag, "from": watch.new_store,
                   "to": value, "why": reason},
        )  # fmt: skip
        try:
            entry = await self._flags.set(
                target, flag, value, actor="guardrail", reason=reason, force=True
            )
        except Exception:
            watch.fired = False  # let the next observation (or flush) try again
            log.exception("GUARDRAIL could not roll back", extra={"resource": target})
            return
        # Not when another instance had already rolled the change back: nothing changed here.
        if self._rollbacks is not None and entry.old != entry.new:
            self._rollbacks.labels(target).inc()
        if self.watches.get(target) is watch:
            self._disarm(target)
        if self._tally is not None and watch.joined:
            with contextlib.suppress(Exception):
                await self._tally.end(target, watch.id)
