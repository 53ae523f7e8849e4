"""Replay's nouns: a stored request, the case made of its records, what became of it."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Re-sent without ``--allow-unsafe``; store-mode replays only ever read."""


class Verdict(StrEnum):
    FIXED = "fixed"
    STILL_DIFFERENT = "still_different"
    FAILING = "failing"
    NOT_REPLAYABLE = "not_replayable"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


REMAINING = frozenset({Verdict.STILL_DIFFERENT, Verdict.FAILING})
"""What makes ``replay`` exit 3 (``--strict`` adds ``not_replayable``)."""


@dataclass(frozen=True, slots=True)
class Request:
    """One request as its record holds it (redacted): ``kind`` ``http`` (``target`` is the
    route) or ``store`` (``target`` is the resource, ``operation`` the read)."""

    kind: str
    target: str
    method: str
    path: str
    operation: str = ""
    requester: str | None = None

    @property
    def ident(self) -> str:
        """A short stable id of the request, the same in a corpus and in replay's output."""
        text = "\x00".join((self.kind, self.target, self.method, self.path, self.operation))
        return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Case:
    """The records of one request, replayed once. ``unreplayable`` says why it cannot be
    re-sent faithfully; ``answer`` is the primary's answer a corpus recorded (redacted)."""

    request: Request
    records: int = 1
    request_ids: tuple[str, ...] = ()
    unreplayable: str | None = None
    answer: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Result:
    case: Case
    verdict: Verdict
    detail: str = ""
    differences: tuple[Mapping[str, Any], ...] = ()
    sides: Mapping[str, Any] = field(default_factory=dict)
    """Per side (backend or store name): its status, or ``error``/``absent``/``found``."""


@dataclass(frozen=True, slots=True)
class Totals:
    records: Mapping[Verdict, int]
    requests: Mapping[Verdict, int]
    malformed: int = 0

    @classmethod
    def of(cls, results: Iterable[Result], malformed: int = 0) -> Totals:
        records: Counter[Verdict] = Counter()
        requests: Counter[Verdict] = Counter()
        for result in results:
            records[result.verdict] += result.case.records
            requests[result.verdict] += 1
        return cls(dict(records), dict(requests), malformed)

    def remaining(self, *, strict: bool) -> bool:
        counted = REMAINING | {Verdict.NOT_REPLAYABLE} if strict else REMAINING
        return any(self.requests.get(v, 0) for v in counted)
