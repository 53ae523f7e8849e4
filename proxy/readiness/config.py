"""Readiness configuration and the exact meaning of every count the verdict uses.

Outcomes (``comparators.model.Outcome``) are classified like this:

=================  ==========================================================================
``match``          a **comparison**
``mismatch``       a **comparison** and a **mismatch**
``transient``      a **comparison**, NOT a mismatch (the difference vanished on a re-read)
``noise``          a **comparison**, NOT a mismatch (differs only in fields learned as noise,
                   docs/noise.md)
``shadow_error``   a **shadow failure** (counts in the shadow error rate's numerator)
``timeout``        a **shadow failure** (counts in the shadow error rate's numerator)
``primary_error``  excluded from comparisons and attempts; reported as ``primary_error_rate``
                   (shown, used only by the guardrail)
``dropped``        excluded everywhere (the shadow never ran: queue full, load shed)
``skipped``        excluded everywhere (nothing comparable, e.g. a non-idempotent request)
``unjudged``       not a comparison; used by the mismatch estimate below (the bytes
                   differed, but the comparison CPU budget, ``shadow.compare_cpu_share``, was
                   spent: ``comparators.UNJUDGED``)
``parsed_match``   not an outcome of its own: the matches whose bodies differed in bytes
                   and were equal once parsed (``comparators.EQUAL_ONCE_PARSED``), counted in
                   ``match`` too; used by the mismatch estimate below
=================  ==========================================================================

- ``comparisons = match + mismatch + transient + noise``
- ``mismatch rate = mismatch / comparisons``; the criterion compares the UPPER bound of its 95%
  Wilson score interval (z = 1.96) with ``max_mismatch_rate``; 0 comparisons → bound 1.0.
- With ``unjudged > 0`` the differences were sampled, so the rate is estimated from the
  sample: ``judged = mismatch + transient + noise + parsed_match`` (the differences that were
  judged), ``differed = judged + unjudged``, and the rate is
  ``differed / (comparisons + unjudged) * mismatch / judged``, with the upper bound
  ``differed / (comparisons + unjudged) * wilson_upper(mismatch, judged)`` (1.0 for the
  second factor when nothing was judged: every unjudged difference counts as a mismatch).
- ``attempts = comparisons + shadow_error + timeout``
- ``shadow error rate = (shadow_error + timeout) / attempts`` (unknown when attempts = 0)
- ``primary error rate = primary_error / (attempts + primary_error)``
- Every limit is inclusive: a criterion passes when ``measured <= max`` (``>= min`` for the
  number of comparisons).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MATCH = "match"
MISMATCH = "mismatch"
TRANSIENT = "transient"
NOISE = "noise"
SHADOW_ERROR = "shadow_error"
TIMEOUT = "timeout"
PRIMARY_ERROR = "primary_error"
DROPPED = "dropped"
SKIPPED = "skipped"
UNJUDGED = "unjudged"
PARSED_MATCH = "parsed_match"

COMPARISON_OUTCOMES = frozenset({MATCH, MISMATCH, TRANSIENT, NOISE})
SHADOW_FAILURE_OUTCOMES = frozenset({SHADOW_ERROR, TIMEOUT})
EXCLUDED_OUTCOMES = frozenset({PRIMARY_ERROR, DROPPED, SKIPPED, UNJUDGED})

#: What the lead passes as ``required_operations`` for a store-mode resource when the config
#: leaves it unset. HTTP routes have no fixed set (operations are methods): pass the route's
#: methods, or ``()`` to require none.
RESOURCE_OPERATIONS: tuple[str, ...] = ("get", "lookup", "list", "batch_get")

MAX_BUCKETS_PER_WINDOW = 10_000


class ReadinessConfig(BaseModel):
    """``readiness:`` in the config file. See the module docstring for the definitions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_seconds: int = Field(3600, ge=1)
    bucket_seconds: int = Field(10, ge=1)
    min_comparisons: int = Field(1000, ge=0)
    max_mismatch_rate: float = Field(0.001, ge=0, le=1)
    max_shadow_error_rate: float = Field(0.01, ge=0, le=1)
    max_new_p99_seconds: float = Field(0.05, gt=0)
    required_operations: tuple[str, ...] | None = None
    store: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    prefix: str = Field("shadowproxy:readiness", min_length=1)
    flush_interval_seconds: float = Field(1.0, gt=0, le=60)
    timeout_seconds: float = Field(1.0, gt=0)
    #: stopping writes to the old store needs a clean full-table verify at most this old
    verify_max_age_seconds: float = Field(86400.0, gt=0)
    #: where verify results are kept with ``store: memory`` (None: the default file, see
    #: ``proxy.readiness.verify_results``)
    verify_results_path: str | None = Field(None, min_length=1)

    @field_validator("required_operations")
    @classmethod
    def _operations(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        if any(not op or op != op.strip() for op in value):
            raise ValueError("operation names must be non-empty and without surrounding spaces")
        return tuple(dict.fromkeys(value))  # order kept, duplicates dropped

    @model_validator(mode="after")
    def _window(self) -> ReadinessConfig:
        if self.window_seconds < self.bucket_seconds:
            raise ValueError("window_seconds must be at least bucket_seconds")
        if self.window_seconds / self.bucket_seconds > MAX_BUCKETS_PER_WINDOW:
            raise ValueError(
                f"window_seconds / bucket_seconds must be at most {MAX_BUCKETS_PER_WINDOW}"
            )
        return self

    def operations_for(self, default: tuple[str, ...]) -> tuple[str, ...]:
        """The configured ``required_operations``, else the target's ``default``."""
        return default if self.required_operations is None else self.required_operations
