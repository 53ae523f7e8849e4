"""The noise learner's arithmetic, thresholds, bounds and reset (proxy.experiment.noise)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from comparators.model import Comparison, Difference, Outcome
from proxy.errors import ConfigError
from proxy.experiment.noise import NoiseLearner, NoiseMetrics
from proxy.settings import NoiseConfig, settings_from_mapping

CAP = 100  # max_differences
MATCH = Comparison(Outcome.MATCH)


def mismatch(*paths: str, summarised: bool = False) -> Comparison:
    return Comparison(
        Outcome.MISMATCH, tuple(Difference(p, "changed", 1, 2) for p in paths), summarised
    )


def learner(**config: float) -> NoiseLearner:
    cfg = NoiseConfig(backend="twin", **config)  # type: ignore[arg-type]
    return NoiseLearner({"r": cfg}, clock=lambda: 1_700_000_000.0)


def teach(ln: NoiseLearner, noise: list[Comparison], shadow: list[Comparison]) -> None:
    for c in noise:
        ln.learn_noise("r", c, CAP)
    for c in shadow:
        ln.learn_shadow("r", c, CAP)


def test_rates_are_differences_over_comparisons_per_route_and_field() -> None:
    ln = learner(min_samples=4)
    teach(
        ln,
        [mismatch("body.request_id"), mismatch("body.request_id", "body.items[0].at"), MATCH,
         mismatch("body.items[3].at")],
        [mismatch("body.request_id"), MATCH],
    )  # fmt: skip
    state = ln.state("r")
    assert (state.noise_comparisons, state.shadow_comparisons) == (4, 2)
    assert state.noise_rate("body.request_id") == 0.5
    assert state.noise_rate("body.items[].at") == 0.5  # list indexes collapsed
    assert state.shadow_rate("body.request_id") == 0.5
    assert state.shadow_rate("body.items[].at") == 0.0
    assert state.noise_rate("body.name") == 0.0


def test_the_threshold_is_a_share_of_the_shadow_rate() -> None:
    # noise rate of body.a: 2/4 = 0.5; shadow rate: 4/4 = 1.0
    for threshold, noisy in ((0.5, True), (0.49, True), (0.51, False), (1.0, False)):
        ln = learner(min_samples=4, threshold=threshold)
        noise = [mismatch("body.a"), mismatch("body.a"), MATCH, MATCH]
        teach(ln, noise, [mismatch("body.a")] * 4)
        assert ln.state("r").noisy("body.a") is noisy, threshold


def test_a_field_that_always_differs_on_both_sides_is_noisy_even_at_threshold_one() -> None:
    ln = learner(min_samples=3, threshold=1.0)
    teach(ln, [mismatch("body.id")] * 3, [mismatch("body.id")] * 5)
    assert ln.state("r").noisy("body.id")


def test_nothing_is_noisy_below_min_samples() -> None:
    ln = learner(min_samples=5)
    teach(ln, [mismatch("body.ts")] * 4, [mismatch("body.ts")])
    assert ln.state("r").learning
    assert ln.classify("r", mismatch("body.ts"), CAP)[0].outcome is Outcome.MISMATCH
    ln.learn_noise("r", mismatch("body.ts"), CAP)
    assert not ln.state("r").learning
    assert ln.classify("r", mismatch("body.ts"), CAP)[0].outcome is Outcome.NOISE


def test_a_field_never_seen_differing_on_the_noise_side_is_never_noisy() -> None:
    ln = learner(min_samples=2, threshold=0.01)
    teach(ln, [MATCH] * 50, [mismatch("body.name")] * 50)
    assert not ln.state("r").noisy("body.name")
    # and a field the noise side never even saw
    assert ln.noisy_fields("r", ["body.other"]) == ()


def test_classify_needs_every_differing_field_noisy() -> None:
    ln = learner(min_samples=2)
    teach(ln, [mismatch("body.request_id")] * 2, [mismatch("body.request_id")])
    only_noise, noisy = ln.classify("r", mismatch("body.request_id"), CAP)
    assert only_noise.outcome is Outcome.NOISE and noisy == ("body.request_id",)
    assert "body.request_id" in only_noise.detail
    assert only_noise.differences == mismatch("body.request_id").differences
    real, noisy = ln.classify("r", mismatch("body.request_id", "body.name"), CAP)
    assert real.outcome is Outcome.MISMATCH and noisy == ("body.request_id",)
    assert ln.classify("r", MATCH, CAP) == (MATCH, ())


def test_summarised_or_capped_comparisons_do_not_teach() -> None:
    ln = learner(min_samples=2)
    teach(ln, [mismatch("body.a")] * 2, [mismatch("body.a")])
    state = ln.state("r")
    ln.learn_noise("r", mismatch("body.a", summarised=True), CAP)
    ln.learn_shadow("r", mismatch("body.a", summarised=True), CAP)
    ln.learn_noise("r", Comparison(Outcome.SKIPPED), CAP)
    ln.learn_noise("r", None, CAP)  # the noise backend failed
    ln.learn_shadow("r", Comparison(Outcome.SHADOW_ERROR), CAP)
    assert (state.noise_comparisons, state.shadow_comparisons) == (2, 1)
    # A summary lists every differing top-level key: all noisy, it is noise; else not.
    assert ln.classify("r", mismatch("body.a", summarised=True), CAP)[0].outcome is Outcome.NOISE
    summarised = mismatch("body.a", "body.b", summarised=True)
    assert ln.classify("r", summarised, CAP)[0].outcome is Outcome.MISMATCH
    # a full page of differences may have had more cut off: it cannot be all noise
    assert ln.classify("r", mismatch("body.a"), 1)[0].outcome is Outcome.MISMATCH


def test_tracked_fields_are_capped_and_the_overflow_counted() -> None:
    registry = CollectorRegistry()
    cfg = NoiseConfig(backend="twin", min_samples=1, max_fields=3)
    ln = NoiseLearner({"r": cfg}, metrics=NoiseMetrics.create(registry))
    for i in range(10):
        ln.learn_noise("r", mismatch(f"body.f{i}"), CAP)
    ln.learn_shadow("r", mismatch("body.f0", "body.f9"), CAP)
    state = ln.state("r")
    assert sorted(state.fields) == ["body.f0", "body.f1", "body.f2"]
    assert state.fields_dropped == 8  # seven on the noise side, body.f9 on the shadow side
    dropped = registry.get_sample_value("shadowproxy_noise_fields_dropped_total", {"route": "r"})
    assert dropped == 8
    assert not state.noisy("body.f9")  # untracked: never noisy
    assert (
        registry.get_sample_value(
            "shadowproxy_noise_comparisons_total", {"route": "r", "result": "mismatch"}
        )
        == 10
    )


def test_snapshot_shows_rates_noisy_first_and_reset_forgets() -> None:
    ln = learner(min_samples=2)
    teach(ln, [mismatch("body.ts"), mismatch("body.ts", "body.x")], [mismatch("body.x")] * 2)
    view = ln.snapshot()["r"]
    assert view["learning"] is False and view["noise_comparisons"] == 2
    assert view["noisy_fields"] == ["body.ts", "body.x"]  # by noise rate, highest first
    first, second = view["fields"]
    assert first == {
        "field": "body.ts", "noisy": True, "noise_differences": 2, "shadow_differences": 0,
        "noise_rate": 1.0, "shadow_rate": 0.0,
    }  # fmt: skip
    assert second["field"] == "body.x" and second["noisy"] is True  # 0.5 >= 0.5 * 1.0
    assert view["since"] == "2023-11-14T22:13:20Z"
    assert ln.reset("r") == ("r",)
    after = ln.snapshot("r")["r"]
    assert after["fields"] == [] and after["noise_comparisons"] == 0 and after["learning"]


@pytest.mark.parametrize(
    ("noise", "message"),
    [
        ({"backend": "nope"}, "routes[0].noise.backend = 'nope': no such backend"),
        ({"backend": "db"}, "routes[0].noise.backend = 'db': the noise backend must be of kind"),
        ({"backend": "primary"}, "routes[0].noise.backend = 'primary': must be a second"),
        ({"backend": "shadow"}, "routes[0].noise.backend = 'shadow': must be a second"),
        ({"backend": "twin", "sample": 0}, "routes[0].noise.sample = 0"),
        ({"backend": "twin", "sample": 1.5}, "routes[0].noise.sample = 1.5"),
        ({"backend": "twin", "threshold": 0}, "routes[0].noise.threshold = 0"),
        ({"backend": "twin", "min_samples": 0}, "routes[0].noise.min_samples = 0"),
        ({"backend": "twin", "max_fields": 0}, "routes[0].noise.max_fields = 0"),
        ({"backend": "twin", "bogus": 1}, "routes[0].noise.bogus: unknown key"),
        ({"sample": 0.5}, "routes[0].noise.backend: required key is missing"),
    ],
)
def test_bad_noise_config_names_the_key_and_value(noise: dict[str, object], message: str) -> None:
    raw = {
        "backends": {
            name: {"kind": "http", "url": f"http://127.0.0.1:{port}"}
            for name, port in (("primary", 1), ("shadow", 2), ("twin", 3))
        }
        | {"db": {"kind": "postgres"}},
        "routes": [
            {"name": "r", "path": "/*", "primary": "primary", "shadow": "shadow", "noise": noise}
        ],
    }
    with pytest.raises(ConfigError) as e:
        settings_from_mapping(raw)
    assert message in str(e.value)


def test_a_noise_backend_needs_a_shadow_to_compare_with() -> None:
    raw = {
        "backends": {
            "primary": {"kind": "http", "url": "http://127.0.0.1:1"},
            "twin": {"kind": "http", "url": "http://127.0.0.1:3"},
        },
        "routes": [{"name": "r", "path": "/*", "primary": "primary", "noise": {"backend": "twin"}}],
    }
    with pytest.raises(ConfigError, match=r"routes\[0\].noise.backend = 'twin': the route has no"):
        settings_from_mapping(raw)
