"""HTTP routes compiled from config: backends resolved, rules compiled, sampling decided."""

from __future__ import annotations

import random
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from comparators import Rules, RuleSpec, compile_rules
from proxy.errors import ConfigError
from proxy.settings import CompareConfig, Route
from proxy.upstream import HttpUpstream


@dataclass(frozen=True, slots=True)
class HttpRoute:
    name: str
    primary: HttpUpstream
    shadow: HttpUpstream | None
    sample: float
    sample_key: str | None
    shadow_methods: frozenset[str]
    rules: Rules

    def sampled(self, request: web.Request) -> bool:
        if self.shadow is None or request.method not in self.shadow_methods:
            return False
        if self.sample >= 1.0:
            return True
        if self.sample <= 0.0:
            return False
        if self.sample_key is None:
            return random.random() < self.sample
        key = _sample_key(self.sample_key, request)
        return zlib.crc32(key.encode("utf-8", "surrogateescape")) / 0x1_0000_0000 < self.sample


def _sample_key(spec: str, request: web.Request) -> str:
    if spec == "path":
        return request.path
    kind, _, name = spec.partition(":")
    if kind == "header":
        return request.headers.get(name, "")
    return request.query.get(name, "")


def rule_spec(config: CompareConfig) -> RuleSpec:
    return RuleSpec(
        ignore=config.ignore,
        numeric_tolerance=config.numeric_tolerance,
        numeric_tolerances=dict(config.numeric_tolerances),
        timestamp_tolerance_seconds=config.timestamp_tolerance_seconds,
        timestamp_tolerances=dict(config.timestamp_tolerances),
        unordered=config.unordered,
        keyed=dict(config.keyed),
        compare_status=config.status,
        headers=tuple(h.lower() for h in config.headers),
        max_diff_bytes=config.max_diff_bytes,
    )


def build_route(index: int, route: Route, upstreams: Mapping[str, HttpUpstream]) -> HttpRoute:
    try:
        rules = compile_rules(rule_spec(route.compare))
    except ValueError as e:
        raise ConfigError(f"routes[{index}].compare: {e}") from e
    return HttpRoute(
        name=route.name,
        primary=upstreams[route.primary],
        shadow=upstreams[route.shadow] if route.shadow else None,
        sample=route.sample,
        sample_key=route.sample_key,
        shadow_methods=frozenset(route.shadow_methods),
        rules=rules,
    )
