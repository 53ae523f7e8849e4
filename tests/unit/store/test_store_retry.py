from __future__ import annotations

import pytest

from proxy.store.retry import RetryPolicy


def test_full_jitter_bounds() -> None:
    policy = RetryPolicy(base_delay=0.1, max_delay=1.0)
    assert policy.delay(1, rand=lambda: 0.0) == 0.0
    assert policy.delay(1, rand=lambda: 0.999) == pytest.approx(0.1998)
    assert policy.delay(3, rand=lambda: 0.5) == pytest.approx(0.4)
    assert policy.delay(10, rand=lambda: 0.5) == pytest.approx(0.5)  # capped at max_delay


def test_delays_are_random_within_the_cap() -> None:
    policy = RetryPolicy(base_delay=0.01, max_delay=0.05)
    delays = [policy.delay(4) for _ in range(200)]
    assert all(0 <= d < 0.05 for d in delays)
    assert len(set(delays)) > 100


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"base_delay": -1}])
def test_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
