from __future__ import annotations

from proxy.resources.breaker import Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_threshold_and_half_opens_after_cooldown() -> None:
    clock = Clock()
    breaker = Breaker(threshold=3, cooldown_seconds=2.0, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    assert breaker.allow() and not breaker.is_open
    breaker.failure()
    assert breaker.is_open
    assert not breaker.allow()
    clock.now += 2.5
    assert breaker.allow()  # one trial call
    assert not breaker.allow()  # the others keep skipping while it is tried
    breaker.failure()
    assert not breaker.allow()
    clock.now += 2.5
    assert breaker.allow()
    breaker.success()
    assert breaker.allow() and breaker.allow()
    assert not breaker.is_open
