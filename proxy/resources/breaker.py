"""A circuit breaker for secondary writes: when the secondary store keeps failing, stop
waiting for it on every write and send the keys straight to the repair log for a while, so a
dead secondary cannot add its timeout to every client write."""

from __future__ import annotations

import time
from collections.abc import Callable


class Breaker:
    def __init__(
        self,
        *,
        threshold: int = 5,
        cooldown_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = threshold
        self._cooldown = cooldown_seconds
        self._clock = clock
        self._failures = 0
        self._open_until = 0.0

    @property
    def is_open(self) -> bool:
        return self._failures >= self._threshold and self._clock() < self._open_until

    def allow(self) -> bool:
        """Closed: yes. Open: no, until the cooldown has passed; then one trial call."""
        if self._failures < self._threshold:
            return True
        now = self._clock()
        if now < self._open_until:
            return False
        self._open_until = now + self._cooldown  # half-open: one caller tries
        return True

    def success(self) -> None:
        self._failures = 0
        self._open_until = 0.0

    def failure(self) -> None:
        self._failures += 1
        if self._failures >= self._threshold:
            self._open_until = self._clock() + self._cooldown
