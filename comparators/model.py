"""The experiment's nouns: computed once, frozen, safe to hand to any sink."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    MATCH = "match"
    MISMATCH = "mismatch"
    # A mismatch only in fields learned as noise (two instances of the primary differ there
    # too; proxy.experiment.noise): a comparison, not a mismatch.
    NOISE = "noise"
    TRANSIENT = "transient"
    SHADOW_ERROR = "shadow_error"
    PRIMARY_ERROR = "primary_error"
    TIMEOUT = "timeout"
    DROPPED = "dropped"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Difference:
    """One difference between the primary and the shadow.

    ``path`` is dotted with list indexes, e.g. ``body.items[3].email``, ``status`` or
    ``headers.content-type``. ``kind`` is one of ``changed``, ``added`` (only the shadow has
    it), ``removed`` (only the primary has it), ``type_changed`` or ``summarised`` (the
    structured diff was not computed; the path is the coarsest level that differs).
    """

    path: str
    kind: str
    primary: Any = None
    shadow: Any = None


@dataclass(frozen=True, slots=True)
class BodyPreview:
    """A body that is not JSON, as a difference shows it: its size, what it looks like and a
    digest, never its bytes (they may hold anything, PII included). A redactor turns the
    digest into a keyed token; ``str()`` leaves it out."""

    size: int
    kind: str  # "html", "json (unparseable)", "text", "binary" or "empty"
    digest: str  # sha256 hex of the whole body

    def __str__(self) -> str:
        return f"{self.size} bytes {self.kind}"


@dataclass(frozen=True, slots=True)
class Comparison:
    outcome: Outcome
    differences: tuple[Difference, ...] = ()
    summarised: bool = False
    detail: str = ""

    @property
    def fields(self) -> tuple[str, ...]:
        """Difference paths with list indexes collapsed (``items[3].a`` -> ``items[].a``)."""
        from comparators.paths import collapse_indexes

        return tuple(dict.fromkeys(collapse_indexes(d.path) for d in self.differences))


@dataclass(frozen=True, slots=True)
class HttpSnapshot:
    """What one side answered, as far as comparison needs it.

    ``headers`` are (lower-cased name, value) pairs in arrival order (the proxy keeps only those
    a comparison reads: the rules' header names and the content type); ``body`` is ``None``
    when it was larger than the comparison cap (the comparison is then ``skipped``).
    """

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = b""
