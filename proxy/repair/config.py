"""The ``repair:`` section of the config: where the repair log lives and how fast it drains."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

TABLE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,53}$"  # leaves room for the index name's suffix


class RepairConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["redis", "postgres", "memory"] = "redis"
    url: str = "redis://127.0.0.1:6379/0"
    dsn: str | None = None
    stream: str = Field("shadowproxy:repair", min_length=1)
    group: str = Field("shadowproxy-repairers", min_length=1)
    table: str = Field("shadowproxy_repair_log", pattern=TABLE_PATTERN)
    interval_seconds: float = Field(1.0, gt=0)
    batch: int = Field(100, ge=1, le=10_000)
    concurrency: int = Field(8, ge=1, le=256)
    max_attempts: int = Field(100, ge=1)
    retry_after_seconds: float = Field(5.0, gt=0)
    intent_grace_seconds: float = Field(30.0, gt=0)
    late_write_seconds: float = Field(30.0, gt=0)
    timeout_seconds: float = Field(2.0, gt=0)
