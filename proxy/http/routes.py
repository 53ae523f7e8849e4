"""HTTP routes compiled from config: backends resolved, rules compiled, sampling decided."""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

from comparators import Rules, RuleSpec, compile_rules
from proxy.errors import ConfigError
from proxy.flags import RouteFlagState
from proxy.http.upstream import HttpUpstream
from proxy.settings import CompareConfig, NoiseConfig, Route


@dataclass(frozen=True, slots=True)
class Sides:
    """Who answers and who is shadowed for one request, read once from the live flags."""

    primary: HttpUpstream
    shadow: HttpUpstream | None
    sample: float
    new_side: str  # "shadow" while the shadow is the configured new backend, else "primary"


@dataclass(frozen=True, slots=True)
class HttpRoute:
    name: str
    upstreams: Mapping[str, HttpUpstream]
    flags: Callable[[str], RouteFlagState]
    new_backend: str | None
    sample_key: str | None
    shadow_methods: frozenset[str]
    rules: Rules
    # A second instance of ``primary`` (the configured one), learned as noise (docs/noise.md).
    primary: str = ""
    noise: NoiseConfig | None = None
    # The answer headers a comparison reads (``compared_headers``): the rules' and the type.
    compared: frozenset[bytes] = field(init=False)

    def __post_init__(self) -> None:
        names = frozenset({b"content-type", *(name.encode() for name in self.rules.headers)})
        object.__setattr__(self, "compared", names)

    def noise_upstream(self, sides: Sides) -> HttpUpstream | None:
        """The noise twin to ask along with this shadow call, or None: no noise configured,
        this request not drawn, or the live primary is not the one the twin copies (reads
        flipped), so its differences would teach nothing."""
        noise = self.noise
        if noise is None or sides.primary.name != self.primary:
            return None
        if noise.sample < 1.0 and random.random() >= noise.sample:
            return None
        return self.upstreams[noise.backend]

    def sides(self) -> Sides:
        state = self.flags(self.name)
        shadow = self.upstreams[state.shadow] if state.shadow else None
        new_side = "shadow" if state.shadow == self.new_backend else "primary"
        return Sides(self.upstreams[state.primary], shadow, state.sample, new_side)

    def sampled(self, request: web.Request, path: str, sides: Sides) -> bool:
        sample = sides.sample
        if sides.shadow is None or request.method not in self.shadow_methods:
            return False
        if sample >= 1.0:
            return True
        if sample <= 0.0:
            return False
        if self.sample_key is None:
            return random.random() < sample
        key = _sample_key(self.sample_key, request, path)
        return zlib.crc32(key.encode("utf-8", "surrogateescape")) / 0x1_0000_0000 < sample


def _sample_key(spec: str, request: web.Request, path: str) -> str:
    if spec == "path":
        return path
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
        compare_server_errors=config.server_errors,
        headers=tuple(h.lower() for h in config.headers),
        max_diff_bytes=config.max_diff_bytes,
    )


def build_route(
    index: int,
    route: Route,
    upstreams: Mapping[str, HttpUpstream],
    flags: Callable[[str], RouteFlagState],
) -> HttpRoute:
    try:
        rules = compile_rules(rule_spec(route.compare))
    except ValueError as e:
        raise ConfigError(f"routes[{index}].compare: {e}") from e
    return HttpRoute(
        name=route.name,
        upstreams=upstreams,
        flags=flags,
        new_backend=route.shadow,
        sample_key=route.sample_key,
        shadow_methods=frozenset(route.shadow_methods),
        rules=rules,
        primary=route.primary,
        noise=route.noise,
    )
