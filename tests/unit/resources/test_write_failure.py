"""Which failed writes may still land (their repair waits ``late_write_seconds``)."""

from __future__ import annotations

import pytest

from proxy.repair.repairer import RepairRace
from proxy.resources.writes import BreakerOpen, Failure
from proxy.store.base import (
    InvalidRecord,
    RequestCut,
    StoreTimeout,
    StoreUnavailable,
    Throttled,
)


@pytest.mark.parametrize(
    ("error", "late"),
    [
        (TimeoutError(), True),  # our deadline: the request may still be on its way
        (StoreTimeout("read timed out"), True),
        (RequestCut("dynamodb: Disconnected: connection reset"), True),
        (ConnectionResetError(), True),
        (StoreUnavailable("dynamodb: ConnectFailed: refused"), False),  # nothing was sent
        (Throttled("still throttled"), False),  # refused by the store
        (BreakerOpen("dynamodb: circuit breaker open"), False),  # never sent
        (RepairRace("record changed during 3 repair rounds"), False),
        (InvalidRecord("cannot encode"), False),
    ],
)
def test_late_means_the_outcome_is_unknown(error: BaseException, late: bool) -> None:
    failure = Failure("put", "dynamodb", error)
    assert failure.late is late
    assert failure.reason.startswith("put on dynamodb")
