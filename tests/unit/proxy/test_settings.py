from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from proxy.errors import ConfigError
from proxy.settings import load_settings, settings_from_mapping

BASE: dict[str, Any] = {
    "backends": {
        "legacy": {"kind": "http", "url": "http://127.0.0.1:8001"},
        "candidate": {"kind": "http", "url": "http://127.0.0.1:8002"},
    },
    "routes": [{"name": "users", "path": "/users/*", "primary": "legacy", "shadow": "candidate"}],
}


def with_(path: str, value: Any) -> dict[str, Any]:
    import copy

    raw = copy.deepcopy(BASE)
    node: Any = raw
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[parts[-1]] = value
    return raw


def test_defaults_are_valid() -> None:
    settings = settings_from_mapping(BASE)
    assert settings.routes[0].methods == ("GET", "HEAD")
    assert settings.routes[0].sample == 1.0
    assert settings.sink.kind == "jsonl"


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("routes.0.sample", 1.5, "routes[0].sample = 1.5"),
        ("routes.0.sample", "half", "routes[0].sample = 'half'"),
        ("routes.0.primary", "nope", "routes[0].primary = 'nope': no such backend"),
        ("routes.0.shadow", "legacy", "routes[0].shadow = 'legacy': same as primary"),
        ("routes.0.path", "users", "routes[0].path = 'users': must start with '/'"),
        ("routes.0.methods", ["FETCH"], "unknown HTTP method 'FETCH'"),
        ("routes.0.sample_key", "cookie:x", "routes[0].sample_key = 'cookie:x'"),
        ("backends.legacy.url", "ftp://x", "backends.legacy.url = 'ftp://x'"),
        ("backends.legacy.timeout_seconds", 0, "backends.legacy.timeout_seconds = 0"),
        ("listen.port", 70000, "listen.port = 70000"),
        ("shadow.queue_size", 0, "shadow.queue_size = 0"),
        ("shadow.compare_cpu_share", 1.5, "shadow.compare_cpu_share = 1.5"),
        ("shadow.compare_cpu_share", -0.1, "shadow.compare_cpu_share = -0.1"),
        ("shadow.compare_cpu_share", "half", "shadow.compare_cpu_share = 'half'"),
        ("shadow.compare_cpu_burst_seconds", -1, "shadow.compare_cpu_burst_seconds = -1"),
        ("bogus", 1, "bogus: unknown key"),
        ("sink", {"kind": "kafka"}, "sink"),
        ("workers", 0, "workers = 0"),
    ],
)
def test_bad_values_name_the_key_and_value(path: str, value: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        settings_from_mapping(with_(path, value))
    assert expected in str(err.value)


def test_duplicate_route_names_are_refused() -> None:
    raw = with_("routes", [BASE["routes"][0], BASE["routes"][0]])
    with pytest.raises(ConfigError, match=r"routes\[1\].name = 'users': duplicate"):
        settings_from_mapping(raw)


def test_missing_required_key() -> None:
    raw = with_("routes", [{"name": "x", "path": "/x"}])
    with pytest.raises(ConfigError, match=r"routes\[0\].primary: required key is missing"):
        settings_from_mapping(raw)


def test_environment_overrides() -> None:
    env = {
        "SHADOWPROXY__LISTEN__PORT": "8181",
        "SHADOWPROXY__BACKENDS__LEGACY__URL": "http://10.0.0.5:9000",
        "SHADOWPROXY__ROUTES__0__SAMPLE": "0.25",
        "SHADOWPROXY__SHADOW__QUEUE_SIZE": "7",
        "SHADOWPROXY_ADMIN_TOKEN": "not an override",
        "UNRELATED": "x",
    }
    settings = settings_from_mapping(BASE, env=env)
    assert settings.listen.port == 8181
    assert settings.backends["legacy"].url == "http://10.0.0.5:9000"
    assert settings.routes[0].sample == 0.25
    assert settings.shadow.queue_size == 7


def test_bad_environment_override_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="SHADOWPROXY__ROUTES__0__SAMPLE"):
        settings_from_mapping(BASE, env={"SHADOWPROXY__ROUTES__0__SAMPLE": "[unclosed"})
    with pytest.raises(ConfigError, match="no list item '5'"):
        settings_from_mapping(BASE, env={"SHADOWPROXY__ROUTES__5__SAMPLE": "1"})
    with pytest.raises(ConfigError, match=r"routes\[0\].sample = 3"):
        settings_from_mapping(BASE, env={"SHADOWPROXY__ROUTES__0__SAMPLE": "3"})


def test_load_settings_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "missing.yaml", env={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad, env={})
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(scalar, env={})


def test_shipped_configs_are_valid() -> None:
    root = Path(__file__).parents[3] / "config"
    files = sorted(root.glob("*.yaml"))
    assert files
    for path in files:
        load_settings(path, env={})


def test_shadow_methods_star_means_every_method_for_routing_and_readiness() -> None:
    from proxy.control.decisions import targets_from

    raw = with_("routes.0.shadow_methods", ["*"])
    raw["routes"][0]["methods"] = ["GET", "POST"]
    settings = settings_from_mapping(raw)
    assert "POST" in settings.routes[0].shadow_methods
    assert "*" not in settings.routes[0].shadow_methods
    # Readiness looks at the shadowed methods the route takes (HEAD is a GET).
    assert targets_from(settings, {})["users"].operations == ("GET", "POST")


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (
            "resources.users.secondary_write_budget_seconds",
            -1,
            "secondary_write_budget_seconds = -1",
        ),
        ("resources.users.secondary_write_budget_seconds", "soon", "= 'soon'"),
        ("resources.users.max_pending_secondary_writes", 0, "max_pending_secondary_writes = 0"),
        ("resources.users.write_verify", 1.5, "resources.users.write_verify = 1.5"),
        ("resources.users.shadow_sample", "sticky", "shadow_sample = 'sticky'"),
        ("repair.intent_grace_seconds", 0, "repair.intent_grace_seconds = 0"),
        ("repair.late_write_seconds", -5, "repair.late_write_seconds = -5"),
        ("repair.kind", "kafka", "repair.kind = 'kafka'"),
    ],
)
def test_bad_dual_write_settings_name_the_key_and_value(
    path: str, value: Any, expected: str
) -> None:
    import copy
    from pathlib import Path

    import yaml

    raw = yaml.safe_load(Path("config/users.yaml").read_text())
    node: Any = copy.deepcopy(raw)
    root = node
    *parents, last = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    with pytest.raises(ConfigError) as err:
        settings_from_mapping(root)
    assert expected in str(err.value)
