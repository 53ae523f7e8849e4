"""The ``rate_limits:`` section of the config: token buckets per requester, per route or
resource where it matters, kept in this process or shared through Redis.

    rate_limits:
      default: {rate: 50, burst: 100}        # every requester not named below
      requesters:
        checkout: {rate: 500, burst: 1000}
      targets:                               # a route's or resource's own buckets
        users:
          default: {rate: 20, burst: 40}
          requesters: {checkout: {rate: 200, burst: 400}}

No behaviour here, so ``proxy.settings`` can import it without the feature.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rate(_Model):
    """A token bucket: ``rate`` tokens a second, at most ``burst`` at once; a request takes one."""

    rate: float = Field(gt=0, le=1_000_000)
    burst: int = Field(ge=1, le=1_000_000)


def _named(v: dict[str, Rate]) -> dict[str, Rate]:
    for name in v:
        if not name or len(name) > 256:
            raise ValueError(f"requester name {name!r} must be 1 to 256 characters")
    return v


class TargetRates(_Model):
    """The buckets of one route or resource: apply to its requests instead of the global ones."""

    default: Rate | None = None
    requesters: dict[str, Rate] = {}

    @field_validator("requesters")
    @classmethod
    def _requester_names(cls, v: dict[str, Rate]) -> dict[str, Rate]:
        return _named(v)


class RateLimitConfig(_Model):
    store: Literal["memory", "redis"] = "memory"
    default: Rate | None = None
    requesters: dict[str, Rate] = {}
    targets: dict[str, TargetRates] = {}
    # memory: the most buckets kept; the least recently used is dropped (it refills).
    max_buckets: int = Field(10_000, ge=1, le=10_000_000)
    redis_url: str = "redis://127.0.0.1:6379/0"
    prefix: str = Field("shadowproxy:ratelimit", min_length=1)
    # The check sits on the primary path: keep the deadline small.
    timeout_seconds: float = Field(0.05, gt=0, le=10)
    # After a Redis failure, requests are let through (or refused) this long without asking.
    retry_after_seconds: float = Field(1.0, ge=0, le=60)
    fail_closed: bool = False

    @field_validator("requesters")
    @classmethod
    def _requester_names(cls, v: dict[str, Rate]) -> dict[str, Rate]:
        return _named(v)

    def configured(self) -> bool:
        """Whether any request can be limited at all (else no limiter is built)."""
        return bool(
            self.default
            or self.requesters
            or any(t.default or t.requesters for t in self.targets.values())
        )
