"""``rate_limits:``: every bad value is a config error naming the key and the value."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.errors import ConfigError
from proxy.settings import settings_from_mapping

ROUTES: dict[str, Any] = {
    "backends": {"a": {"kind": "http", "url": "http://127.0.0.1:1"}},
    "routes": [{"name": "users-get", "path": "/users/{id}", "primary": "a"}],
}


def load(rate_limits: Any) -> Any:
    return settings_from_mapping({**ROUTES, "rate_limits": rate_limits}, env={})


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"default": {"rate": 0, "burst": 5}}, "rate_limits.default.rate = 0: "),
        ({"default": {"rate": "fast", "burst": 5}}, "rate_limits.default.rate = 'fast': "),
        ({"default": {"rate": 1, "burst": 0}}, "rate_limits.default.burst = 0: "),
        ({"default": {"rate": 1}}, "rate_limits.default.burst: required key is missing"),
        ({"requesters": {"web": {"rate": -2, "burst": 1}}}, "rate_limits.requesters.web.rate = -2"),
        (
            {"targets": {"users-get": {"default": {"rate": 1, "burst": 2.5}}}},
            "rate_limits.targets.users-get.default.burst = 2.5",
        ),
        ({"store": "disk"}, "rate_limits.store = 'disk': Input should be 'memory' or 'redis'"),
        ({"timeout_seconds": 0}, "rate_limits.timeout_seconds = 0: "),
        ({"max_buckets": 0}, "rate_limits.max_buckets = 0: "),
        ({"fail_open": True}, "rate_limits.fail_open: unknown key"),
        (
            {"targets": {"orders": {"default": {"rate": 1, "burst": 1}}}},
            "rate_limits.targets.orders: no route or resource of that name (known: users-get)",
        ),
        ({"requesters": {"": {"rate": 1, "burst": 1}}}, "requester name '' must be 1 to 256"),
    ],
)
def test_bad_values_name_the_key_and_the_value(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(section)
    assert message in str(e.value)


def test_a_valid_section_and_the_environment_override() -> None:
    settings = settings_from_mapping(
        {**ROUTES, "rate_limits": {"default": {"rate": 5, "burst": 10}}},
        env={"SHADOWPROXY__RATE_LIMITS__DEFAULT__BURST": "20"},
    )
    assert settings.rate_limits is not None
    assert settings.rate_limits.default is not None
    assert settings.rate_limits.default.burst == 20
    assert settings.rate_limits.configured()
    assert not load({"store": "redis"}).rate_limits.configured()
    assert settings_from_mapping(ROUTES, env={}).rate_limits is None
