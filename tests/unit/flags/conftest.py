from __future__ import annotations

import pytest

from proxy.flags.model import FlagSnapshot, ResourceFlagState, RouteFlagState


def make_snapshot(version: int = 0) -> FlagSnapshot:
    return FlagSnapshot(
        version=version,
        resources={
            "users": ResourceFlagState(
                read_from="postgres", write_to=("postgres", "dynamodb"), shadow_reads=1.0
            )
        },
        routes={"users-get": RouteFlagState(primary="legacy", shadow="candidate", sample=1.0)},
    )


@pytest.fixture
def snapshot() -> FlagSnapshot:
    return make_snapshot()
