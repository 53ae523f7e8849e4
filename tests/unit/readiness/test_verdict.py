"""Readiness verdicts on constructed counter histories (no I/O)."""

from __future__ import annotations

import json
import math
import random

import pytest
from pydantic import ValidationError

from proxy.readiness import (
    RESOURCE_OPERATIONS,
    STOP_OLD_WRITES,
    Criterion,
    ReadinessConfig,
    Verdict,
    WindowTotals,
    WriteFacts,
    refusal,
    render_text,
    to_dict,
    to_json,
    verdict,
    wilson_upper,
    write_verdict,
)
from proxy.readiness.verdict import mismatch_estimate

OPS = RESOURCE_OPERATIONS
FAST = [0.01] * 100  # p99 0.01 s: the bucket bound 10**-2 exactly
NOW = 1_700_000_000.0


def config(**overrides: object) -> ReadinessConfig:
    return ReadinessConfig.model_validate(overrides)


def history(
    counts: dict[tuple[str, str], int] | None = None,
    *,
    per_op_matches: int = 1000,
    new_seconds: list[float] | None = None,
) -> WindowTotals:
    """A passing history (4000 clean comparisons over every operation, fast new side),
    with ``counts`` added on top."""
    merged = {(op, "match"): per_op_matches for op in OPS}
    for key, n in (counts or {}).items():
        merged[key] = merged.get(key, 0) + n
    return WindowTotals.build(
        "users",
        merged,
        new_seconds=FAST if new_seconds is None else new_seconds,
        old_seconds=FAST,
        start=NOW - 3600,
        end=NOW,
    )


def judge(totals: WindowTotals, **overrides: object) -> Verdict:
    return verdict(totals, config(**overrides), required_operations=OPS)


def criterion(v: Verdict, name: str) -> Criterion:
    (found,) = [c for c in v.criteria if c.name == name]
    return found


# --- Wilson ------------------------------------------------------------------------------


def wilson_by_bisection(k: int, n: int, z: float = 1.96) -> float:
    """Independent reference: the upper root of (p_hat - p)^2 = z^2 p (1 - p) / n."""
    p_hat = k / n
    lo, hi = p_hat, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if (mid - p_hat) ** 2 <= z * z * mid * (1 - mid) / n:
            lo = mid
        else:
            hi = mid
    return lo


@pytest.mark.parametrize(
    ("k", "n", "expected"),
    [(0, 1000, 0.0038269), (5, 1000, 0.0116511), (1, 10, 0.4041564), (50, 100, 0.5961702)],
)
def test_wilson_upper_known_values(k: int, n: int, expected: float) -> None:
    assert wilson_upper(k, n) == pytest.approx(expected, abs=5e-7)
    assert wilson_upper(k, n) == pytest.approx(wilson_by_bisection(k, n), rel=1e-9)


def test_wilson_edges() -> None:
    assert wilson_upper(0, 0) == 1.0
    assert wilson_upper(7, 7) == 1.0
    assert wilson_upper(0, 1) < 1.0
    assert [wilson_upper(k, 100) for k in range(5)] == sorted(
        wilson_upper(k, 100) for k in range(5)
    )
    assert wilson_upper(0, 1000, z=2.576) > wilson_upper(0, 1000)
    for k, n in [(-1, 10), (11, 10), (0, -1)]:
        with pytest.raises(ValueError):
            wilson_upper(k, n)


def test_clean_comparisons_needed_at_the_default_threshold() -> None:
    # Documented consequence of the defaults: with no mismatch at all, 3838 comparisons are
    # needed before the 95% upper bound drops to 0.1 %.
    assert wilson_upper(0, 3837) > 0.001 >= wilson_upper(0, 3838)


# --- the read verdict ----------------------------------------------------------------------


def test_a_clean_history_is_ready() -> None:
    v = judge(history())
    assert v.ready, render_text(v)
    assert [c.name for c in v.criteria] == [
        "comparisons",
        "mismatch_rate",
        "shadow_error_rate",
        "new_p99_seconds",
        "missing_operations",
    ]
    assert all(c.status == "ok" for c in v.criteria)
    assert v.failing == ()
    assert v.window_seconds == 3600
    assert v.computed_at == NOW
    assert v.operations == {op: 1000 for op in OPS}


def test_zero_comparisons() -> None:
    v = judge(WindowTotals.build("users", end=NOW))
    assert not v.ready
    comparisons = criterion(v, "comparisons")
    assert (comparisons.measured, comparisons.passed) == (0, False)
    mismatch = criterion(v, "mismatch_rate")
    assert (mismatch.measured, mismatch.passed) == (1.0, False)
    assert "point estimate n/a" in mismatch.detail
    assert criterion(v, "shadow_error_rate").passed is None
    assert criterion(v, "new_p99_seconds").passed is None
    assert criterion(v, "missing_operations").measured == OPS
    assert v.stats["mismatch_rate"] is None
    assert v.stats["mismatch_rate_upper95"] == 1.0


def test_zero_comparisons_fail_even_with_no_minimum() -> None:
    v = judge(WindowTotals.build("users", end=NOW), min_comparisons=0)
    assert criterion(v, "comparisons").passed is True
    assert not v.ready  # the Wilson bound of 0/0 is 1.0


def test_minimum_comparisons_is_inclusive() -> None:
    at = judge(history(), min_comparisons=4000)
    assert criterion(at, "comparisons").passed is True and at.ready
    above = judge(history(), min_comparisons=4001)
    assert criterion(above, "comparisons").passed is False and not above.ready


def test_mismatch_rate_exactly_at_the_threshold_passes_one_more_fails() -> None:
    n, k = 4000, 2
    limit = wilson_upper(k, n)  # the bound with k mismatches IS the threshold
    at = judge(history({("get", "match"): -k, ("get", "mismatch"): k}), max_mismatch_rate=limit)
    assert at.stats["comparisons"] == n
    assert criterion(at, "mismatch_rate").measured == limit
    assert criterion(at, "mismatch_rate").passed is True
    assert at.ready
    # one match becomes a mismatch: same n, k + 1
    more = history({("get", "match"): -(k + 1), ("get", "mismatch"): k + 1})
    over = judge(more, max_mismatch_rate=limit)
    assert criterion(over, "mismatch_rate").passed is False
    assert not over.ready
    assert (
        "point estimate 0.00075 (3 mismatches / 4000 comparisons"
        in criterion(over, "mismatch_rate").detail
    )


def test_the_point_estimate_alone_would_pass_but_the_bound_does_not() -> None:
    v = judge(history({("get", "match"): -1, ("get", "mismatch"): 1}))  # 1 / 4000 = 0.00025
    assert v.stats["mismatch_rate"] == 0.00025
    assert criterion(v, "mismatch_rate").passed is False  # upper bound ≈ 0.0014 > 0.001


def test_transient_is_a_comparison_not_a_mismatch() -> None:
    # 3000 matches and 1000 transients: all 4000 are comparisons, none is a mismatch.
    v = judge(history({("get", "match"): -1000, ("get", "transient"): 1000}))
    assert v.stats["comparisons"] == 4000
    assert v.stats["mismatch"] == 0
    assert v.stats["transient"] == 1000
    assert criterion(v, "mismatch_rate").measured == wilson_upper(0, 4000)
    assert "1000 transient not counted" in criterion(v, "mismatch_rate").detail
    assert v.ready


def test_transients_alone_exercise_an_operation() -> None:
    v = judge(history({("batch_get", "match"): -1000, ("batch_get", "transient"): 1}))
    assert criterion(v, "missing_operations").passed is True


def test_shadow_error_rate_exactly_at_the_threshold_passes_one_more_fails() -> None:
    # 3960 comparisons + 20 shadow errors + 20 timeouts = 4000 attempts, rate 0.01
    base = {("get", "match"): -40, ("get", "shadow_error"): 20, ("list", "timeout"): 20}
    at = judge(history(base), max_shadow_error_rate=0.01)
    errors = criterion(at, "shadow_error_rate")
    assert at.stats["attempts"] == 4000
    assert errors.measured == 40 / 4000 == 0.01
    assert errors.passed is True
    assert at.ready
    worse = {**base, ("get", "match"): -41, ("get", "shadow_error"): 21}  # 41 / 4000
    over = judge(history(worse), max_shadow_error_rate=0.01)
    assert criterion(over, "shadow_error_rate").passed is False
    assert not over.ready


def test_excluded_outcomes_change_no_rate() -> None:
    noise = {("get", "dropped"): 10_000, ("get", "skipped"): 500, ("get", "primary_error"): 40}
    v = judge(history(noise))
    assert v.ready
    assert v.stats["attempts"] == 4000
    assert v.stats["shadow_error_rate"] == 0.0
    assert v.stats["primary_error_rate"] == 40 / 4040
    assert v.stats["dropped"] == 10_000


# --- differences the comparison CPU budget did not judge --------------------------------


def test_without_unjudged_answers_the_estimate_is_the_plain_rate() -> None:
    plain = {"match": 3990, "mismatch": 6, "transient": 3, "noise": 1, "skipped": 50}
    e = mismatch_estimate(plain)
    assert e.point == 6 / 4000
    assert e.upper == wilson_upper(6, 4000)
    assert e.lower == pytest.approx(1 - wilson_upper(3994, 4000))


def test_unjudged_differences_are_estimated_from_the_judged_ones() -> None:
    # 10,000 answers: 9,000 equal; of the 1,000 that differed, 200 were judged (20 mismatches,
    # 180 only in learned noise) and 800 not. A tenth of the answers differed, a tenth of
    # the judged differences mismatch: about 1% of answers.
    outcomes = {"match": 9000, "mismatch": 20, "noise": 180, "unjudged": 800}
    e = mismatch_estimate(outcomes)
    assert e.point == pytest.approx(0.1 * 20 / 200)
    assert e.upper == pytest.approx(0.1 * wilson_upper(20, 200))
    assert e.lower < e.point < e.upper
    assert e.detail.startswith("estimated: 1000 of 10000 answers differed, 200 judged")
    # Counting the unjudged as if they did not exist would say 20 / 9,200: far too low.
    assert e.point > 4 * (20 / 9200)


def test_answers_equal_once_parsed_are_part_of_the_judged_sample() -> None:
    # A candidate that writes every body in another key order: every answer differs in
    # bytes, 2,000 were judged (all equal once parsed), 8,000 were not. Nothing mismatches.
    e = mismatch_estimate({"match": 2000, "parsed_match": 2000, "unjudged": 8000})
    assert e.point == 0.0
    assert e.upper == pytest.approx(wilson_upper(0, 2000))
    assert "2000 equal once parsed" in e.detail


def test_with_nothing_judged_every_unjudged_difference_counts_as_a_mismatch() -> None:
    e = mismatch_estimate({"match": 900, "unjudged": 100})
    assert (e.point, e.lower, e.upper) == (None, 0.0, 0.1)


def test_the_estimate_covers_the_true_rate_under_thinning() -> None:
    """Simulated traffic with a known mismatch rate, thinned as the budget thins it (the
    first differences of each second judged, the rest not): the 95% interval holds the
    true rate in about 95% of windows, where ignoring the unjudged almost never would."""
    rng = random.Random(7)
    true_rate, differ_rate, judged_per_second = 0.02, 0.2, 40
    covered = naive_covered = 0
    windows = 200
    for _ in range(windows):
        counts = {"match": 0, "mismatch": 0, "noise": 0, "unjudged": 0}
        mismatches = 0
        for _second in range(10):
            judged = 0
            for _answer in range(1000):
                u = rng.random()
                if u >= differ_rate:
                    counts["match"] += 1
                    continue
                mismatch = u < true_rate
                mismatches += mismatch
                if judged >= judged_per_second:
                    counts["unjudged"] += 1
                    continue
                judged += 1
                counts["mismatch" if mismatch else "noise"] += 1
        e = mismatch_estimate(counts)
        truth = mismatches / 10_000
        covered += e.lower <= truth <= e.upper
        n = counts["match"] + counts["mismatch"] + counts["noise"]
        naive_covered += (
            1 - wilson_upper(n - counts["mismatch"], n)
            <= truth
            <= wilson_upper(counts["mismatch"], n)
        )
    assert covered >= 0.9 * windows
    assert naive_covered <= 0.1 * windows


def test_unjudged_differences_can_fail_the_mismatch_criterion() -> None:
    # Every judged difference mismatched and most were not judged: the estimate is about
    # 100 / 4100 even though only 10 mismatches were seen.
    v = judge(history({("get", "match"): -10, ("get", "mismatch"): 10, ("get", "unjudged"): 90}))
    mismatch = criterion(v, "mismatch_rate")
    assert mismatch.passed is False
    assert v.stats["unjudged"] == 90
    assert v.stats["comparisons"] == 4000
    assert v.stats["mismatch_rate"] == pytest.approx(100 / 4090)
    assert "estimated: 100 of 4090 answers differed, 10 judged" in mismatch.detail
    assert "unjudged 90" in render_text(v)


def test_differences_judged_as_noise_keep_an_unjudged_history_ready() -> None:
    # 40,000 comparisons, 1,000 of them differences judged as noise, 9,000 unjudged: a
    # fifth of the answers differed, none of the judged ones mismatched.
    thinned = {("get", "match"): -1000, ("get", "noise"): 1000, ("get", "unjudged"): 9000}
    v = judge(history(thinned, per_op_matches=10_000))
    assert v.stats["mismatch_rate"] == 0.0
    assert criterion(v, "mismatch_rate").measured == pytest.approx(
        10_000 / 49_000 * wilson_upper(0, 1000)
    )
    assert v.ready
    # The same history with only 100 judged is too thin a sample to say so.
    few = {("get", "match"): -100, ("get", "noise"): 100, ("get", "unjudged"): 9900}
    assert not judge(history(few, per_op_matches=10_000)).ready


def test_shadow_error_rate_unknown_without_attempts() -> None:
    only_dropped = WindowTotals.build("users", {("get", "dropped"): 5}, end=NOW)
    errors = criterion(judge(only_dropped), "shadow_error_rate")
    assert (errors.measured, errors.passed, errors.status) == (None, None, "unknown")


def test_a_missing_operation() -> None:
    v = judge(history({("batch_get", "match"): -1500}, per_op_matches=1500))
    missing = criterion(v, "missing_operations")
    assert missing.measured == ("batch_get",)
    assert missing.threshold == OPS
    assert missing.passed is False
    assert not v.ready
    assert v.failing == (missing,)
    assert "never compared: batch_get" in missing.detail


def test_an_operation_that_only_failed_is_missing() -> None:
    v = judge(history({("batch_get", "match"): -1000, ("batch_get", "shadow_error"): 3}))
    assert criterion(v, "missing_operations").measured == ("batch_get",)


def test_no_required_operations() -> None:
    v = verdict(history(), config(), required_operations=())
    assert criterion(v, "missing_operations").passed is True
    assert v.ready


def test_p99_unknown_without_new_side_samples_is_not_ready() -> None:
    v = judge(history(new_seconds=[]))
    p99 = criterion(v, "new_p99_seconds")
    assert (p99.measured, p99.passed, p99.status) == (None, None, "unknown")
    assert not v.ready
    assert [c.name for c in v.failing] == ["new_p99_seconds"]


def test_p99_at_the_limit_passes_and_above_fails() -> None:
    v = judge(history(), max_new_p99_seconds=0.01)
    assert criterion(v, "new_p99_seconds").measured == 0.01
    assert v.ready
    slow = judge(history(new_seconds=[0.01] * 98 + [0.2] * 2), max_new_p99_seconds=0.01)
    assert criterion(slow, "new_p99_seconds").measured == pytest.approx(0.2, rel=0.13)
    assert not slow.ready


def test_timeouts_make_p99_infinite() -> None:
    totals = history()
    latency = {**totals.latency, "new": {**totals.latency["new"], 121: 2}}  # overflow bucket
    v = judge(WindowTotals("users", totals.counts, latency, totals.start, totals.end))
    assert criterion(v, "new_p99_seconds").measured == math.inf
    assert not v.ready
    assert to_dict(v)["stats"]["new_p99_seconds"] == "inf"


def test_extra_criteria_are_appended_and_decide() -> None:
    extra = Criterion("flag_store", "ok", "ok", None, "unknown")
    v = verdict(history(), config(), required_operations=OPS, extra_criteria=(extra,))
    assert v.criteria[-1] is extra
    assert not v.ready


# --- stop writing the old store -------------------------------------------------------------


def on_new(**facts: object) -> WriteFacts:
    """Reads on the new store, an empty repair log, and ``facts`` on top."""
    base: dict[str, object] = {"read_from": "dynamodb", "new_store": "dynamodb", "repair_depth": 0}
    return WriteFacts(**{**base, **facts})  # type: ignore[arg-type]


def stop(facts: WriteFacts, totals: WindowTotals | None = None, **overrides: object) -> Verdict:
    return write_verdict(
        history() if totals is None else totals,
        config(**overrides),
        required_operations=OPS,
        facts=facts,
    )


def test_write_verdict_is_unknown_until_a_verify_has_run() -> None:
    v = stop(on_new())
    assert v.decision == STOP_OLD_WRITES
    verify = criterion(v, "verify")
    assert verify.passed is None
    assert verify.detail == "unknown: no full-table verify has been saved"
    assert verify.threshold == 86400
    assert criterion(v, "repair_log").passed is True
    assert criterion(v, "reads_on_new_store").passed is True
    assert not v.ready
    assert [c.name for c in v.failing] == ["verify"]


@pytest.mark.parametrize(
    ("verify_age", "depth", "ready"),
    [
        (60.0, 0, True),
        (86400.0, 0, True),  # inclusive: "no older than"
        (86401.0, 0, False),
        (60.0, 3, False),
        (60.0, None, False),
    ],
)
def test_write_verdict(verify_age: float, depth: int | None, ready: bool) -> None:
    v = stop(on_new(verify_clean_at=NOW - verify_age, repair_depth=depth))
    assert v.ready is ready
    assert criterion(v, "verify").measured == verify_age
    assert criterion(v, "repair_log").passed is (None if depth is None else depth == 0)


def test_verify_max_age_seconds_is_the_threshold() -> None:
    facts = on_new(verify_clean_at=NOW - 600)
    assert stop(facts, verify_max_age_seconds=900).ready
    v = stop(facts, verify_max_age_seconds=300)
    assert not v.ready
    assert (criterion(v, "verify").measured, criterion(v, "verify").threshold) == (600, 300)


@pytest.mark.parametrize("bad", [0, -1, "soon"])
def test_verify_max_age_seconds_must_be_positive(bad: object) -> None:
    with pytest.raises(ValidationError, match="verify_max_age_seconds"):
        config(verify_max_age_seconds=bad)


def test_reads_must_already_be_on_the_new_store() -> None:
    v = stop(on_new(read_from="postgres", verify_clean_at=NOW - 1))
    reads = criterion(v, "reads_on_new_store")
    assert (reads.measured, reads.operator, reads.threshold) == ("postgres", "==", "dynamodb")
    assert reads.passed is False and "flip read_from to dynamodb first" in reads.detail
    assert not v.ready
    unknown = criterion(stop(on_new(new_store=None)), "reads_on_new_store")
    assert unknown.passed is None and "no new store" in unknown.detail


def test_a_verify_that_found_differences_fails_and_unknowns_say_why() -> None:
    v = stop(on_new(verify_failed=True, verify_detail="the latest verify found differences"))
    assert criterion(v, "verify").passed is False
    assert criterion(v, "verify").detail == "the latest verify found differences"
    v = stop(on_new(verify_detail="verify results file x is not valid", repair_depth=None,
                    repair_detail="the repair log could not be read: TimeoutError"))  # fmt: skip
    assert criterion(v, "verify").detail == "unknown: verify results file x is not valid"
    repair = criterion(v, "repair_log")
    assert repair.passed is None and "TimeoutError" in repair.detail


def test_write_verdict_needs_the_read_criteria_too() -> None:
    v = stop(on_new(verify_clean_at=NOW - 1), history(new_seconds=[]))
    assert not v.ready
    assert [c.name for c in v.failing] == ["new_p99_seconds"]


def test_refusal_lists_every_unmet_criterion_with_value_and_threshold() -> None:
    v = stop(on_new(read_from="postgres", verify_clean_at=NOW - 90000, repair_depth=4))
    text = refusal(v)
    assert "reads_on_new_store postgres (needs == dynamodb" in text
    assert "verify 90000 (needs <= 86400" in text
    assert "repair_log 4 (needs <= 0" in text
    assert "comparisons" not in text  # passing criteria are not listed


# --- output ---------------------------------------------------------------------------------


def test_render_text_shows_every_criterion_with_measured_threshold_and_result() -> None:
    text = render_text(judge(history({("batch_get", "match"): -1000}, new_seconds=[])))
    assert text.startswith("users: NOT READY to flip reads")
    lines = text.splitlines()
    assert lines[2].split()[:4] == ["criterion", "measured", "threshold", "result"]
    rows = {line.split()[0]: line for line in lines[3:8]}
    assert rows["comparisons"].split()[1:4] == ["3000", ">=", "1000"]
    assert " ok " in rows["comparisons"]
    assert " FAIL " in rows["missing_operations"] and "batch_get" in rows["missing_operations"]
    assert " unknown " in rows["new_p99_seconds"]
    assert "primary_error_rate" in text
    assert render_text(judge(history())).startswith("users: READY to flip reads")


def test_to_json_round_trips() -> None:
    v = judge(history({("get", "mismatch"): 1}))
    data = json.loads(to_json(v))
    assert data["ready"] is False
    assert data["target"] == "users"
    assert data["decision"] == "flip_reads"
    names = [c["name"] for c in data["criteria"]]
    assert names[1] == "mismatch_rate"
    assert data["criteria"][1]["status"] == "FAIL"
    assert data["criteria"][4]["measured"] == []
    assert data["criteria"][4]["threshold"] == list(OPS)
    assert data["stats"]["mismatch"] == 1
    assert data["computed_at"] == "2023-11-14T22:13:20Z"


# --- config ----------------------------------------------------------------------------------


def test_config_defaults_and_validation() -> None:
    c = ReadinessConfig()
    assert (c.window_seconds, c.bucket_seconds, c.min_comparisons) == (3600, 10, 1000)
    assert (c.max_mismatch_rate, c.max_shadow_error_rate) == (0.001, 0.01)
    assert c.store == "memory" and c.required_operations is None
    assert c.operations_for(OPS) == OPS
    assert config(required_operations=["get", "get", "list"]).required_operations == ("get", "list")
    with pytest.raises(ValidationError):
        config(unknown=1)
    with pytest.raises(ValidationError):
        config(window_seconds=5, bucket_seconds=10)
    with pytest.raises(ValidationError):
        config(max_mismatch_rate=1.5)
    with pytest.raises(ValidationError):
        config(required_operations=[""])
    with pytest.raises(ValidationError):
        config(store="postgres")
    with pytest.raises(ValidationError):
        c.window_seconds = 10  # type: ignore[misc]
