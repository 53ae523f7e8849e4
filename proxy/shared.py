"""The one frozen bundle of parts both modes and the control plane share, built once.

    shared = shared_parts(settings, registry=registry, env=os.environ)

Everything else is built from settings plus this bundle (``proxy.app.build``); nothing
reaches for a global.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from comparators import DiffBudget, Redactor
from proxy.experiment.noise import NoiseLearner, noise_learner
from proxy.experiment.publish import Observer, Publisher
from proxy.experiment.shadow import ShadowRunner
from proxy.experiment.sinks import BufferedSink, make_sink
from proxy.flags import make_flag_store
from proxy.flags.store import FlagStore
from proxy.metrics import Metrics
from proxy.ratelimit.limiter import RateLimiter
from proxy.request import RequestAccounting
from proxy.settings import Settings

log = logging.getLogger("shadowproxy")


@dataclass(frozen=True)
class Shared:
    registry: CollectorRegistry
    metrics: Metrics
    requests: RequestAccounting
    runner: ShadowRunner
    sink: BufferedSink
    publisher: Publisher
    budget: DiffBudget
    flag_store: FlagStore
    # None when no rate limit is configured: the request path checks only that.
    limiter: RateLimiter | None = None
    # None when no route has a noise backend (docs/noise.md).
    noise: NoiseLearner | None = None


def flag_store_for(settings: Settings, env: Mapping[str, str]) -> FlagStore:
    # Config defaults are audited once, by the first worker (or the only process).
    first_worker = env.get("SHADOWPROXY_WORKER_INDEX", "0") == "0"
    return make_flag_store(settings, settings.flags, audit_config_defaults=first_worker)


def shared_parts(
    settings: Settings,
    *,
    registry: CollectorRegistry,
    env: Mapping[str, str],
    flag_store: FlagStore,
    observers: tuple[Observer, ...] = (),
) -> Shared:
    metrics = Metrics.create(registry)
    sink = make_sink(settings.sink, metrics)
    budget = DiffBudget(
        per_second=settings.shadow.diff_per_second,
        burst=settings.shadow.diff_burst,
        cpu_share=settings.shadow.compare_cpu_share,
        cpu_burst_seconds=settings.shadow.compare_cpu_burst_seconds,
    )
    return Shared(
        registry=registry,
        metrics=metrics,
        requests=RequestAccounting(
            metrics,
            header=settings.requesters.header,
            known=frozenset(settings.requesters.known),
            access_log=settings.logging.access_log,
        ),
        runner=ShadowRunner(
            queue_size=settings.shadow.queue_size,
            concurrency=settings.shadow.concurrency,
            metrics=metrics,
            gather_seconds=settings.shadow.gather_seconds,
        ),
        sink=sink,
        publisher=Publisher(
            metrics=metrics,
            sink=sink,
            redactor=redactor(settings, env),
            observers=observers,
            records=DiffBudget(  # the same token bucket, counting records instead of diffs
                per_second=settings.shadow.records_per_second, burst=settings.shadow.records_burst
            ),
            budget=budget,
        ),
        budget=budget,
        flag_store=flag_store,
        limiter=RateLimiter.from_settings(
            settings.rate_limits, registry, frozenset(settings.requesters.known)
        ),
        noise=noise_learner(settings.routes, registry),
    )


def redactor(settings: Settings, env: Mapping[str, str]) -> Redactor:
    sensitive = set(settings.redaction.fields)
    for resource in settings.resources.values():
        sensitive |= {name for name, f in resource.fields.items() if f.sensitive}
    return Redactor(frozenset(sensitive), redaction_key(settings, env))


def redaction_key(settings: Settings, env: Mapping[str, str]) -> bytes:
    value = env.get(settings.redaction.key_env)
    if value:
        return value.encode()
    log.warning(
        "no redaction key set: hashes of sensitive values are comparable only within this "
        "process; set %s to compare them across processes and restarts",
        settings.redaction.key_env,
    )
    return secrets.token_bytes(32)
