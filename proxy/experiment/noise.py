"""The noise baseline (after Twitter's Diffy): what differs between two instances of the
primary is noise, not a regression.

A route with ``noise:`` sends a share of its shadowed requests to a second instance of the
primary too. Per route and field (list indexes collapsed, as ``mismatch_fields`` has them)
the learner counts

- ``noise_comparisons``: primary-vs-noise answers compared, and per field in how many of
  them the field differed (``noise_differences``);
- ``shadow_comparisons``: primary-vs-shadow answers compared (while the route's noise is on),
  and per field in how many the field differed (``shadow_differences``).

The rule (docs/noise.md)::

    noise_rate(f)  = noise_differences(f)  / noise_comparisons
    shadow_rate(f) = shadow_differences(f) / shadow_comparisons
    noisy(f)  <=>  noise_comparisons >= min_samples
                   and noise_rate(f) > 0
                   and noise_rate(f) >= threshold * shadow_rate(f)

A primary-vs-shadow mismatch becomes outcome ``noise`` only when EVERY field it differs in is
noisy, and its list of differences is complete (not cut at ``max_differences``; a summary
lists every differing top-level key, so it can qualify); anything else stays a
``mismatch``. A field never seen differing
between primary and noise is never noisy, so a real difference there is never hidden.

Only walked comparisons teach: errors, skips and summarised diffs (whose paths are coarse)
are not counted on either side. Memory is bounded: at most ``max_fields`` fields per route
are tracked; a difference in a field past the cap is counted in ``fields_dropped`` (and
``shadowproxy_noise_fields_dropped_total``) and that field is never noisy.

State is per process (each ``--workers`` worker learns on its own) and starts empty.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from comparators.model import Comparison, Outcome
from proxy.settings import NoiseConfig

#: what a primary-vs-noise comparison was, as ``shadowproxy_noise_comparisons_total`` counts it
LEARNED = ("match", "mismatch")
NOT_LEARNED = "not_learned"  # compared, but nothing to learn from (summarised, skipped, 5xx)
ERROR = "error"  # the noise backend failed or timed out


@dataclass(frozen=True)
class NoiseMetrics:
    comparisons: Counter
    fields_dropped: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> NoiseMetrics:
        return cls(
            comparisons=Counter(
                "shadowproxy_noise_comparisons",
                "Primary-vs-noise comparisons by route and result (match, mismatch, "
                "not_learned, error).",
                ("route", "result"),
                registry=registry,
            ),
            fields_dropped=Counter(
                "shadowproxy_noise_fields_dropped",
                "Field differences not learned because the route already tracks max_fields "
                "fields (such a field is never noisy).",
                ("route",),
                registry=registry,
            ),
        )


@dataclass
class FieldCounts:
    noise: int = 0
    shadow: int = 0


@dataclass
class RouteNoise:
    """One route's counts since it started learning (or was reset)."""

    config: NoiseConfig
    since: float
    noise_comparisons: int = 0
    shadow_comparisons: int = 0
    fields_dropped: int = 0
    fields: dict[str, FieldCounts] = field(default_factory=dict)

    @property
    def learning(self) -> bool:
        """Fewer than ``min_samples`` noise comparisons: nothing is noisy yet."""
        return self.noise_comparisons < self.config.min_samples

    def noise_rate(self, name: str) -> float:
        counts = self.fields.get(name)
        if counts is None or not self.noise_comparisons:
            return 0.0
        return counts.noise / self.noise_comparisons

    def shadow_rate(self, name: str) -> float:
        counts = self.fields.get(name)
        if counts is None or not self.shadow_comparisons:
            return 0.0
        return counts.shadow / self.shadow_comparisons

    def noisy(self, name: str) -> bool:
        if self.learning or name not in self.fields:
            return False
        rate = self.noise_rate(name)
        return rate > 0 and rate >= self.config.threshold * self.shadow_rate(name)

    def counts(self, name: str) -> FieldCounts | None:
        """The field's counts, tracked from now on if there is room; None past the cap."""
        counts = self.fields.get(name)
        if counts is None:
            if len(self.fields) >= self.config.max_fields:
                self.fields_dropped += 1
                return None
            counts = self.fields[name] = FieldCounts()
        return counts


def _complete(comparison: Comparison, max_differences: int) -> bool:
    """A mismatch whose differing fields are all listed (none cut at ``max_differences``)."""
    return (
        comparison.outcome is Outcome.MISMATCH and 0 < len(comparison.differences) < max_differences
    )


def _learnable(comparison: Comparison, max_differences: int) -> bool:
    """A match, or a mismatch whose differences were walked (not summarised: a summary's
    paths are only the top-level keys) and listed in full."""
    if comparison.outcome is Outcome.MATCH:
        return True
    return not comparison.summarised and _complete(comparison, max_differences)


class NoiseLearner:
    """The learned noise of every route with ``noise:`` configured. Synchronous and cheap:
    called from shadow jobs on the event loop, never on a client's path."""

    def __init__(
        self,
        routes: Mapping[str, NoiseConfig],
        *,
        metrics: NoiseMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._configs = dict(routes)
        self._metrics = metrics
        self._clock = clock
        self._routes = {name: RouteNoise(cfg, clock()) for name, cfg in self._configs.items()}

    @property
    def routes(self) -> tuple[str, ...]:
        return tuple(self._configs)

    def config(self, route: str) -> NoiseConfig | None:
        return self._configs.get(route)

    def state(self, route: str) -> RouteNoise:
        return self._routes[route]

    # --- learning ---------------------------------------------------------------------------

    def learn_noise(self, route: str, comparison: Comparison | None, max_differences: int) -> None:
        """A primary-vs-noise comparison (None: the noise backend failed)."""
        state = self._routes[route]
        if comparison is None:
            self._count(route, ERROR)
            return
        if not _learnable(comparison, max_differences):
            self._count(route, NOT_LEARNED)
            return
        self._count(route, comparison.outcome.value)
        state.noise_comparisons += 1
        for name in comparison.fields:
            counts = self._counts(route, state, name)
            if counts is not None:
                counts.noise += 1

    def learn_shadow(self, route: str, comparison: Comparison, max_differences: int) -> None:
        """A primary-vs-shadow comparison of a route with noise configured."""
        if not _learnable(comparison, max_differences):
            return
        state = self._routes[route]
        state.shadow_comparisons += 1
        for name in comparison.fields:
            counts = self._counts(route, state, name)
            if counts is not None:
                counts.shadow += 1

    def _counts(self, route: str, state: RouteNoise, name: str) -> FieldCounts | None:
        counts = state.counts(name)
        if counts is None and self._metrics is not None:
            self._metrics.fields_dropped.labels(route).inc()
        return counts

    def _count(self, route: str, result: str) -> None:
        if self._metrics is not None:
            self._metrics.comparisons.labels(route, result).inc()

    # --- judging ----------------------------------------------------------------------------

    def noisy_fields(self, route: str, fields: Iterable[str]) -> tuple[str, ...]:
        """Those of ``fields`` that are noisy on ``route`` now."""
        state = self._routes.get(route)
        if state is None:
            return ()
        return tuple(f for f in fields if state.noisy(f))

    def classify(
        self, route: str, comparison: Comparison, max_differences: int
    ) -> tuple[Comparison, tuple[str, ...]]:
        """``comparison`` as outcome ``noise`` when it is a complete mismatch whose every
        differing field is noisy; else unchanged. Also returns its noisy fields.

        A summarised mismatch qualifies too: its paths are the top-level keys that differ,
        all of them, so when each is a field learned as noisy (learned from walked diffs
        only, where that path itself differed), nothing else differs."""
        if comparison.outcome is not Outcome.MISMATCH:
            return comparison, ()
        fields = comparison.fields
        noisy = self.noisy_fields(route, fields)
        if not noisy or len(noisy) < len(fields) or not _complete(comparison, max_differences):
            return comparison, noisy
        detail = "differs only in learned noise: " + ", ".join(noisy[:20])
        return dataclasses.replace(comparison, outcome=Outcome.NOISE, detail=detail), noisy

    # --- the admin view ---------------------------------------------------------------------

    def reset(self, route: str | None = None) -> tuple[str, ...]:
        """Forget what was learned, of one route or all; the routes reset."""
        names = tuple(self._configs) if route is None else (route,)
        for name in names:
            self._routes[name] = RouteNoise(self._configs[name], self._clock())
        return names

    def snapshot(self, route: str | None = None) -> dict[str, Any]:
        """Every route's counts and fields with their rates, noisy fields first."""
        names = tuple(self._configs) if route is None else (route,)
        return {name: self._route_view(self._routes[name]) for name in names}

    def _route_view(self, state: RouteNoise) -> dict[str, Any]:
        cfg = state.config
        rows: list[dict[str, Any]] = [
            {
                "field": name,
                "noisy": state.noisy(name),
                "noise_differences": counts.noise,
                "shadow_differences": counts.shadow,
                "noise_rate": round(state.noise_rate(name), 6),
                "shadow_rate": round(state.shadow_rate(name), 6),
            }
            for name, counts in state.fields.items()
        ]
        rows.sort(key=lambda r: (not r["noisy"], -r["noise_rate"], -r["shadow_rate"], r["field"]))
        return {
            "backend": cfg.backend,
            "sample": cfg.sample,
            "min_samples": cfg.min_samples,
            "threshold": cfg.threshold,
            "max_fields": cfg.max_fields,
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.since)),
            "learning": state.learning,
            "noise_comparisons": state.noise_comparisons,
            "shadow_comparisons": state.shadow_comparisons,
            "fields_tracked": len(state.fields),
            "fields_dropped": state.fields_dropped,
            "noisy_fields": [r["field"] for r in rows if r["noisy"]],
            "fields": rows,
        }


def noise_learner(
    routes: Iterable[Any], registry: CollectorRegistry | None = None
) -> NoiseLearner | None:
    """The learner of the routes (``proxy.settings.Route``) with ``noise:``; None: none has."""
    configs = {r.name: r.noise for r in routes if r.noise is not None}
    if not configs:
        return None
    metrics = NoiseMetrics.create(registry) if registry is not None else None
    return NoiseLearner(configs, metrics=metrics)
