"""The guardrail: after reads flip to the new store, watch the new primary; when its error
rate or the mismatch rate (now measured against the old store as shadow) crosses its
threshold within the watch period, flip reads back by itself, audited as ``guardrail``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from comparators.model import Outcome
from proxy.experiment.publish import Experiment
from proxy.flags.store import FlagChange, FlagStore
from proxy.settings import GuardrailSettings
from proxy.tasks import spawn

log = logging.getLogger("shadowproxy.guardrail")

COMPARED = frozenset({Outcome.MATCH, Outcome.MISMATCH, Outcome.TRANSIENT})


@dataclass
class Watch:
    old_store: str
    new_store: str
    until: float
    comparisons: int = 0
    mismatches: int = 0
    primary_errors: int = 0
    fired: bool = False


class Guardrail:
    def __init__(
        self,
        *,
        flag_store: FlagStore,
        settings: Mapping[str, GuardrailSettings],
        new_stores: Mapping[str, str | None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._flags = flag_store
        self._settings = {k: v for k, v in settings.items() if v.enabled}
        self._new_stores = new_stores
        self._clock = clock
        self.watches: dict[str, Watch] = {}

    def on_change(self, change: FlagChange) -> None:
        for target, config in self._settings.items():
            old = change.old.resources.get(target)
            new = change.new.resources.get(target)
            if old is None or new is None or old.read_from == new.read_from:
                continue
            if new.read_from == self._new_stores.get(target):
                self.watches[target] = Watch(
                    old.read_from, new.read_from, self._clock() + config.watch_seconds
                )
                log.warning(
                    "guardrail armed: reads flipped to the new store",
                    extra={
                        "resource": target,
                        "store": new.read_from,
                        "watch": config.watch_seconds,
                    },
                )
            else:
                self.watches.pop(target, None)

    def observe(self, exp: Experiment) -> None:
        """Called for every finished comparison (cheap; on the event loop)."""
        watch = self.watches.get(exp.route)
        if watch is None or watch.fired or exp.new_side != "primary":
            return
        if self._clock() > watch.until:
            del self.watches[exp.route]
            log.info("guardrail watch ended without a rollback", extra={"resource": exp.route})
            return
        outcome = exp.comparison.outcome
        if outcome in COMPARED:
            watch.comparisons += 1
            watch.mismatches += outcome is Outcome.MISMATCH
        elif outcome is Outcome.PRIMARY_ERROR:
            watch.primary_errors += 1
        else:
            return
        reason = self._crossed(self._settings[exp.route], watch)
        if reason is not None:
            watch.fired = True
            spawn(self._roll_back(exp.route, watch, reason), name=f"guardrail-{exp.route}")

    @staticmethod
    def _crossed(config: GuardrailSettings, watch: Watch) -> str | None:
        attempts = watch.comparisons + watch.primary_errors
        if attempts < config.min_comparisons:
            return None
        error_rate = watch.primary_errors / attempts
        if error_rate > config.max_primary_error_rate:
            return (
                f"new primary {watch.new_store} error rate {error_rate:.2%} over "
                f"{attempts} reads > {config.max_primary_error_rate:.2%}"
            )
        if watch.comparisons and (rate := watch.mismatches / watch.comparisons) > (
            config.max_mismatch_rate
        ):
            return (
                f"mismatch rate {rate:.2%} over {watch.comparisons} comparisons against "
                f"{watch.old_store} > {config.max_mismatch_rate:.2%}"
            )
        return None

    async def _roll_back(self, target: str, watch: Watch, reason: str) -> None:
        log.error(
            "GUARDRAIL: flipping reads back to the old store",
            extra={
                "resource": target,
                "from": watch.new_store,
                "to": watch.old_store,
                "why": reason,
            },
        )
        try:
            await self._flags.set(
                target, "read_from", watch.old_store, actor="guardrail", reason=reason, force=True
            )
        except Exception:
            watch.fired = False  # let the next observation try again
            log.exception("GUARDRAIL could not flip back", extra={"resource": target})
            return
        self.watches.pop(target, None)
