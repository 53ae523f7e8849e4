"""The mismatch rate's 95% interval is readiness' Wilson interval: the upper bound is
``wilson_upper`` itself, the lower its mirror image."""

from __future__ import annotations

import math

import pytest

from proxy.readiness.verdict import Z95, wilson_upper
from proxy.report import fmt
from proxy.report.build import rate
from proxy.report.counters import from_exposition


def wilson_lower(k: int, n: int) -> float:
    """The textbook lower bound, to check the mirror against."""
    p, z2 = k / n, Z95 * Z95
    centre = p + z2 / (2 * n)
    spread = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z2 / n))


@pytest.mark.parametrize(("k", "n"), [(0, 10), (1, 10), (6, 24), (10, 10), (3, 3840)])
def test_interval(k: int, n: int) -> None:
    r = rate({"match": n - k, "mismatch": k, "shadow_error": 99})
    assert (r.mismatches, r.comparisons) == (k, n)
    assert r.rate == pytest.approx(k / n)
    assert r.upper95 == wilson_upper(k, n)
    assert r.lower95 == pytest.approx(wilson_lower(k, n), abs=1e-12)
    assert r.lower95 <= r.rate <= r.upper95


def test_transients_are_comparisons_and_none_is_unknown() -> None:
    r = rate({"match": 8, "transient": 2})
    assert (r.mismatches, r.comparisons, r.rate) == (0, 10, 0)
    empty = rate({})
    assert (empty.rate, empty.lower95, empty.upper95) == (None, 0.0, 1.0)


def test_unjudged_differences_make_the_rate_an_estimate() -> None:
    r = rate({"match": 9000, "mismatch": 20, "noise": 180, "unjudged": 800, "skipped": 5})
    assert (r.mismatches, r.comparisons, r.unjudged) == (20, 9200, 800)
    assert r.rate == pytest.approx(0.01)
    assert r.upper95 == pytest.approx(0.1 * wilson_upper(20, 200))
    assert "800 differences not judged (comparison CPU budget)" in fmt.rate(r)
    assert "not judged" not in fmt.rate(rate({"match": 10}))


def test_the_budget_skips_are_read_from_their_own_counter() -> None:
    text = (
        'shadowproxy_compare_skipped_total{route="r",reason="cpu_budget"} 7\n'
        'shadowproxy_compare_skipped_total{route="r",reason="body_over_cap"} 2\n'
        'shadowproxy_compare_parsed_matches_total{route="r"} 3\n'
    )
    counters = from_exposition(text)
    assert counters.unjudged_of("r") == 7
    assert counters.parsed_of("r") == 3
    assert (counters.unjudged_of("other"), counters.parsed_of("other")) == (0, 0)


def test_matches_equal_once_parsed_join_the_judged_sample() -> None:
    r = rate({"match": 2000, "parsed_match": 2000, "unjudged": 8000})
    assert (r.rate, r.upper95) == (0.0, pytest.approx(wilson_upper(0, 2000)))
