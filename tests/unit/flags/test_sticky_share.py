"""The sticky per-key split behind new_store_read_fraction."""

from __future__ import annotations

import math
import random
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.flags.model import ResourceFlagState, key_point, read_store, sticky_share

KEYS = 20_000


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.1, 0.25, 0.5, 0.9, 1.0])
def test_observed_share_is_within_a_binomial_bound(fraction: float) -> None:
    rng = random.Random(fraction)
    keys = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(KEYS)]
    share = sum(sticky_share(k, fraction, "users") for k in keys) / KEYS
    sigma = math.sqrt(fraction * (1 - fraction) / KEYS)
    assert abs(share - fraction) <= 4 * sigma + 1e-12


def test_sequential_keys_are_spread_too() -> None:
    share = sum(sticky_share(str(i), 0.3, "users") for i in range(KEYS)) / KEYS
    assert abs(share - 0.3) <= 4 * math.sqrt(0.3 * 0.7 / KEYS)


@given(st.text(), st.floats(0, 1), st.floats(0, 1), st.text(max_size=20))
def test_monotone_in_the_fraction(key: str, a: float, b: float, salt: str) -> None:
    low, high = min(a, b), max(a, b)
    if sticky_share(key, low, salt):
        assert sticky_share(key, high, salt)


@given(st.text(), st.floats(0, 1), st.text(max_size=20))
def test_stable_per_key(key: str, fraction: float, salt: str) -> None:
    first = sticky_share(key, fraction, salt)
    assert all(sticky_share(key, fraction, salt) == first for _ in range(3))
    assert 0.0 <= key_point(key, salt) < 1.0


def test_pinned_points() -> None:
    # The split must not depend on PYTHONHASHSEED, the process or the release: pinned values.
    assert key_point("user-42", "users") == 0.3951935533802686
    assert key_point("", "") == 0.5818916442384907


def test_edges_and_nan() -> None:
    assert not sticky_share("k", 0.0, "s")
    assert not sticky_share("k", float("nan"), "s")
    assert sticky_share("k", 1.0, "s")


def test_salt_makes_resources_independent() -> None:
    keys = [str(i) for i in range(KEYS)]
    a = {k for k in keys if sticky_share(k, 0.5, "users")}
    b = {k for k in keys if sticky_share(k, 0.5, "orders")}
    both = len(a & b) / KEYS
    assert abs(both - 0.25) <= 4 * math.sqrt(0.25 * 0.75 / KEYS)


def test_read_store() -> None:
    state = ResourceFlagState("postgres", ("postgres", "dynamodb"), 1.0, 0.5)
    stores = {read_store(state, str(i), new_store="dynamodb", salt="users") for i in range(100)}
    assert stores == {"postgres", "dynamodb"}
    for i in range(100):
        chosen = read_store(state, str(i), new_store="dynamodb", salt="users")
        assert chosen == ("dynamodb" if sticky_share(str(i), 0.5, "users") else "postgres")
    # never from a store that gets no writes, never without a new store
    cut = ResourceFlagState("postgres", ("postgres",), 1.0, 1.0)
    assert read_store(cut, "k", new_store="dynamodb", salt="users") == "postgres"
    assert read_store(state, "k", new_store=None, salt="users") == "postgres"
    off = ResourceFlagState("postgres", ("postgres", "dynamodb"), 1.0, 0.0)
    assert read_store(off, "k", new_store="dynamodb", salt="users") == "postgres"
