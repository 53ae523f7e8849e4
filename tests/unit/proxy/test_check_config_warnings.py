"""What ``check-config`` warns about on a valid file: a dual write the config makes fragile."""

from __future__ import annotations

from pathlib import Path

from proxy.cli import _warnings
from proxy.settings import load_settings

USERS = Path(__file__).resolve().parents[3] / "config" / "users.yaml"


def test_the_shipped_store_config_has_no_warnings() -> None:
    assert _warnings(load_settings(USERS)) == []


def test_a_memory_repair_log_with_dual_writes_is_named() -> None:
    settings = load_settings(USERS, env={"SHADOWPROXY__REPAIR__KIND": "memory"})
    [line] = _warnings(settings)
    assert "users" in line and "in memory" in line


def test_an_intent_grace_under_twice_a_store_timeout_names_both_values() -> None:
    env = {"SHADOWPROXY__REPAIR__INTENT_GRACE_SECONDS": "6"}
    lines = _warnings(load_settings(USERS, env=env))
    assert lines == [
        "repair.intent_grace_seconds=6 is under twice backends.dynamo.timeout_seconds=5: "
        "a dual write is cut (504) at 3 s, before the store's own timeout",
        "repair.intent_grace_seconds=6 is under twice backends.rds.timeout_seconds=5: "
        "a dual write is cut (504) at 3 s, before the store's own timeout",
    ]


def test_in_process_rate_limits_with_several_workers_are_named() -> None:
    env = {
        "SHADOWPROXY__WORKERS": "4",
        "SHADOWPROXY__RATE_LIMITS__DEFAULT": "{rate: 10, burst: 20}",
    }
    [line] = _warnings(load_settings(USERS, env=env))
    assert "rate_limits.store is memory with workers=4" in line and "4 times" in line
    env["SHADOWPROXY__RATE_LIMITS__STORE"] = "redis"
    assert _warnings(load_settings(USERS, env=env)) == []
