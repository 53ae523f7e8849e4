"""Where the flags live, as declared in config (``flags:``). Importable from
``proxy.settings`` without a cycle: this module imports nothing of the proxy.

    flags:
      kind: redis                        # memory (default): this process only
      url: redis://127.0.0.1:6379/0
      prefix: shadowproxy:flags
      poll_seconds: 0.25
      audit_path: shadowproxy-flags-audit.jsonl   # memory kind: the JSONL audit trail
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class FlagStoreConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["memory", "redis"] = "memory"
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = Field("shadowproxy:flags", min_length=1)
    # Every instance sees a flip within poll_seconds plus a round trip: keep it under 1 s.
    poll_seconds: float = Field(0.25, gt=0, le=1.0)
    timeout_seconds: float = Field(1.0, gt=0)
    audit_path: str = "shadowproxy-flags-audit.jsonl"
    audit_maxlen: int = Field(10_000, ge=1)
