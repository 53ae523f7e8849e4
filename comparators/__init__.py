"""Pure comparison logic for shadowproxy: no I/O, no aiohttp, never imports ``proxy``.

::

    rules = compile_rules(RuleSpec(ignore=("updated_at",), numeric_tolerance=0.01))
    budget = DiffBudget(per_second=200, burst=50)
    comparison = compare(primary_record, shadow_record, rules, budget=budget)
    comparison = compare_http(primary_snapshot, shadow_snapshot, rules, budget=budget)
    record = [redactor.difference(d) for d in comparison.differences]
"""

from comparators.budget import DiffBudget
from comparators.comparison import UNJUDGED, compare
from comparators.errors import ComparatorError, RuleError
from comparators.http import EQUAL_ONCE_PARSED, compare_http
from comparators.model import Comparison, Difference, HttpSnapshot, Outcome
from comparators.normalize import Normalizer
from comparators.paths import ROOT, collapse_indexes, parse_pattern, render_path
from comparators.redact import Redactor
from comparators.rules import Rules, RuleSpec, compile_rules

__all__ = [
    "EQUAL_ONCE_PARSED",
    "ROOT",
    "UNJUDGED",
    "ComparatorError",
    "Comparison",
    "DiffBudget",
    "Difference",
    "HttpSnapshot",
    "Normalizer",
    "Outcome",
    "Redactor",
    "RuleError",
    "RuleSpec",
    "Rules",
    "collapse_indexes",
    "compare",
    "compare_http",
    "compile_rules",
    "parse_pattern",
    "render_path",
]
