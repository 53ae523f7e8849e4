"""``compare``: normalise both sides, canonical bytes fast path, then diff or summarise.

A mismatch is *summarised* instead of walked when the larger side's canonical bytes exceed
``max_diff_bytes``, when the value is nested too deeply to walk, or when the diff budget has no
token (unless tolerances are configured and the value is at most the budget's
``tolerance_walk_bytes``: then it is walked anyway, since a summary could be a false
mismatch). A summarised comparison is a ``MISMATCH`` with ``summarised=True`` whose
differences have kind ``summarised`` and no values: one per top-level key whose canonical
bytes differ when both sides are dicts, else one at the root (``removed`` or ``added`` there
when one side is ``None``: a record on one side only, as the structured diff has it). Note a
summary only says the bytes differ: with tolerances or numbers written differently (``1`` vs
``1.0``) it may be a false mismatch.

When the budget's comparison CPU is spent (``DiffBudget(cpu_share=...)``), values whose
canonical bytes differ are not judged: ``compare`` returns :data:`UNJUDGED`, outcome
``skipped``, neither a match nor a mismatch. Equal bytes are a match whatever the budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from comparators.budget import DiffBudget
from comparators.canonical import canonical
from comparators.diff import diff
from comparators.model import Comparison, Difference, Outcome
from comparators.paths import render_path
from comparators.rules import Rules

MATCH = Comparison(Outcome.MATCH)
UNJUDGED_DETAIL = "not compared: comparison CPU budget spent"
UNJUDGED = Comparison(Outcome.SKIPPED, detail=UNJUDGED_DETAIL)
_EXACT = frozenset((str, int, bool))
SUMMARISED = "summarised"


@dataclass(frozen=True, slots=True)
class Partial:
    """Differences found so far, before capping them into a :class:`Comparison`."""

    differences: tuple[Difference, ...] = ()
    total: int = 0
    summarised: bool = False
    reason: str = ""


NO_DIFFERENCES = Partial()
NOT_JUDGED = Partial(reason=UNJUDGED_DETAIL)  # compare_values' answer past the CPU budget


def compare(
    primary: Any, shadow: Any, rules: Rules, *, budget: DiffBudget | None = None
) -> Comparison:
    """Compare two JSON-like values (store records, parsed bodies) under ``rules``.

    Paths in the result have no prefix (``items[2].email``; the root itself is ``$``).

    Equal canonical bytes before normalising are a match under any rules (normalisers see
    only the value, and equal bytes are equal values): most shadow reads match, and
    normalising both records was ~75% of their comparison's CPU (py-spy, ``store_proxy.py``
    at shadow 100%, a ``set`` field reshaped). Without normalisers those bytes are the ones
    ``compare_values`` takes, so they are not computed twice.
    """
    if rules.normalisers and canonical(primary) == canonical(shadow):
        return MATCH
    found = compare_values(primary, shadow, rules, budget=budget)
    if found is NO_DIFFERENCES:
        return MATCH
    return UNJUDGED if found is NOT_JUDGED else finish(found, rules)


def compare_values(
    primary: Any,
    shadow: Any,
    rules: Rules,
    *,
    budget: DiffBudget | None,
    prefix: str = "",
    charged: bool = False,
) -> Partial:
    """The differences of two values, :data:`NO_DIFFERENCES` or :data:`NOT_JUDGED`.

    ``charged``: the caller already asked the budget's CPU bucket and charges the time
    itself (``compare_http``, whose parsing is part of the comparison)."""
    primary = rules.normalise(primary)
    shadow = rules.normalise(shadow)
    primary_bytes, shadow_bytes = canonical(primary), canonical(shadow)
    if primary_bytes == shadow_bytes:
        return NO_DIFFERENCES
    size = max(len(primary_bytes), len(shadow_bytes))
    if budget is None or charged:
        return _differences(primary, shadow, size, rules, budget, prefix)
    if not budget.may_compare():
        return NOT_JUDGED
    return budget.spend(lambda: _differences(primary, shadow, size, rules, budget, prefix))


def _differences(
    primary: Any,
    shadow: Any,
    size: int,
    rules: Rules,
    budget: DiffBudget | None,
    prefix: str,
) -> Partial:
    reason = _summary_reason(size, rules, budget)
    if not reason:
        try:
            found = diff(primary, shadow, rules, prefix=prefix)
        except RecursionError:
            reason = "structured diff skipped: value nested too deeply"
        else:
            if budget is not None:
                budget.record_walked()
            if not found.total:
                return NO_DIFFERENCES
            return Partial(found.differences, found.total)
    if budget is not None:
        budget.record_summarised()
    return summarise(primary, shadow, prefix, reason)


def summarise(primary: Any, shadow: Any, prefix: str, reason: str) -> Partial:
    """Differences at the coarsest level, from canonical bytes of the top-level keys."""
    if (primary is None) != (shadow is None):
        whole = Difference(render_path(prefix, ()), "removed" if shadow is None else "added")
        return Partial((whole,), 1, True, reason)
    keys: list[Any] = []
    if isinstance(primary, dict) and isinstance(shadow, dict):
        keys = [k for k in primary if k not in shadow or _differs(primary[k], shadow[k])]
        keys.extend(k for k in shadow if k not in primary)
    paths = [render_path(prefix, (_segment(k),)) for k in keys] or [render_path(prefix, ())]
    found = tuple(Difference(path, SUMMARISED) for path in paths)
    return Partial(found, len(found), True, reason)


def finish(found: Partial, rules: Rules) -> Comparison:
    """Cap the differences and say what was left out."""
    shown = found.differences[: rules.max_differences]
    notes = [found.reason] if found.reason else []
    if found.total > len(shown):
        notes.append(
            f"{found.total - len(shown)} more differences not shown"
            f" (max_differences={rules.max_differences})"
        )
    return Comparison(Outcome.MISMATCH, shown, found.summarised, "; ".join(notes))


def _summary_reason(size: int, rules: Rules, budget: DiffBudget | None) -> str:
    if size > rules.max_diff_bytes:
        return f"structured diff skipped: {size} bytes > max_diff_bytes {rules.max_diff_bytes}"
    if budget is None or budget.try_acquire():
        return ""
    if rules.has_tolerances and size <= budget.tolerance_walk_bytes:
        return ""
    return "structured diff skipped: diff budget exhausted"


def _differs(a: Any, b: Any) -> bool:
    if a is b:
        return False
    if type(a) is type(b) and type(a) in _EXACT:
        return bool(a != b)
    return canonical(a) != canonical(b)


def _segment(key: Any) -> str:
    return key if isinstance(key, str) else str(key)
