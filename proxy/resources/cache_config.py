"""The ``cache:`` section of the config: the Redis read-through cache in front of the primary."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CacheConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = Field("shadowproxy:cache", min_length=1)
    # Small on purpose: the cache sits on the primary path and must never slow it much.
    socket_timeout_seconds: float = Field(0.25, gt=0)
    enabled: bool = True
    fill_guard_seconds: float = Field(2.0, gt=0)
    retry_after_seconds: float = Field(1.0, ge=0)
