"""Flag metrics, created against an injected registry.

``shadowproxy_flag_state{target,flag,value}`` (gauge), one series per value a flag has held:

- names (``read_from``, ``primary``, ``shadow``): 1 for the current value, 0 for every value
  this process has seen before (``shadow`` off is the value ``none``);
- ``write_to``: one series per store, 1 when the store receives writes, 0 when it no longer
  does;
- fractions (``shadow_reads``, ``new_store_read_fraction``, ``sample``): one series with
  ``value="fraction"`` whose gauge value is the fraction itself.

So ``shadowproxy_flag_state{target="users",flag="read_from"} == 1`` shows the read store over
time, and ``changes(...)`` of it marks flips on a dashboard.

``shadowproxy_flag_changes_total{target,flag,actor_kind}`` counts changes where they were
made (the instance whose ``set()`` committed them, or that seeded them), so the sum over the
fleet is the number of changes; ``actor_kind`` is ``config``, ``guardrail``, ``restore``,
``cli``, ``admin`` or ``other``. The series of the kinds that change flags at run time
(``cli``, ``admin``, ``guardrail``) exist at 0 for every flag from the start, so
``increase()`` over them sees the first change too (Prometheus cannot tell the first
sample of a new series from a counter that was already there).

``shadowproxy_flag_store_up`` is 1 while the flag store is reachable (always 1 in memory).

Multiprocess modes: the state gauge is ``livemostrecent`` (all workers hold the same flags;
while a flip propagates, the newest write among live workers is the truth, and a dead
worker's stale value must not linger, which ``livemax`` would do for the old value of a
0/1 series for as long as any live worker lags and forever with ``max``). ``store_up`` is
``livemin``: the fleet of workers is up only if every live worker reaches the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from proxy.flags.audit import AuditEntry
from proxy.flags.model import FRACTION_FLAGS, FlagSnapshot, iter_flags
from proxy.flags.store import FlagChange, FlagStore

FRACTION_VALUE = "fraction"
NONE_VALUE = "none"
RUN_TIME_ACTORS = ("cli", "admin", "guardrail")


@dataclass(frozen=True)
class FlagMetrics:
    state: Gauge
    changes: Counter
    store_up: Gauge

    def __post_init__(self) -> None:
        # Not a field: every field is a collector. The label values each flag has shown.
        object.__setattr__(self, "_seen", {})

    @classmethod
    def create(cls, registry: CollectorRegistry) -> FlagMetrics:
        return cls(
            state=Gauge(
                "shadowproxy_flag_state",
                "Current flags: 1 for the current value of a name flag (0 for earlier values), "
                '1/0 per store for write_to, the fraction itself for value="fraction".',
                ("target", "flag", "value"),
                registry=registry,
                multiprocess_mode="livemostrecent",
            ),
            changes=Counter(
                "shadowproxy_flag_changes",
                "Flag changes committed by this process, by target, flag and kind of actor.",
                ("target", "flag", "actor_kind"),
                registry=registry,
            ),
            store_up=Gauge(
                "shadowproxy_flag_store_up",
                "1 while the flag store is reachable; 0 while running on last known flags.",
                registry=registry,
                multiprocess_mode="livemin",
            ),
        )

    def observe(self, snapshot: FlagSnapshot) -> None:
        """Set the state gauge from ``snapshot`` (zeroing values seen before)."""
        for target, flag, value in iter_flags(snapshot):
            if flag in FRACTION_FLAGS:
                self.state.labels(target, flag, FRACTION_VALUE).set(float(value))
                continue
            current = {str(v) for v in value} if isinstance(value, list) else {_label(value)}
            seen = self._seen_values(target, flag)
            for old in seen - current:
                self.state.labels(target, flag, old).set(0)
            for now in current:
                self.state.labels(target, flag, now).set(1)
            seen |= current

    def _seen_values(self, target: str, flag: str) -> set[str]:
        seen: dict[tuple[str, str], set[str]] = self.__dict__["_seen"]
        return seen.setdefault((target, flag), set())

    def record(self, entries: Iterable[AuditEntry]) -> None:
        for entry in entries:
            self.changes.labels(entry.target, entry.flag, entry.actor_kind).inc()

    def set_up(self, up: bool) -> None:
        self.store_up.set(1 if up else 0)

    def attach(self, store: FlagStore) -> Callable[[], None]:
        """Keep these metrics in step with ``store``; returns a detach function."""
        self.observe(store.snapshot())
        self.set_up(store.healthy)
        for target, flag, _ in iter_flags(store.snapshot()):
            for kind in RUN_TIME_ACTORS:
                self.changes.labels(target, flag, kind)  # exported at 0 before a change

        def changed(change: FlagChange) -> None:
            self.observe(change.new)
            self.record(change.entries)

        def health(up: bool, error: str | None) -> None:
            del error
            self.set_up(up)

        off_change = store.on_change(changed)
        off_health = store.on_health(health)

        def detach() -> None:
            off_change()
            off_health()

        return detach


def _label(value: object) -> str:
    return NONE_VALUE if value is None else str(value)
