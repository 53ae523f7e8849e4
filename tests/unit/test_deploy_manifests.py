"""The Kubernetes manifests under deploy/ against Kubernetes' own schemas
(``kubernetes-validate``, strict: an unknown field is an error), and the parts of the
backfill Job that make segments work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from proxy.cli import build_parser
from proxy.migrate.job import parse_segment

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
VERSION = "1.30.0"


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_is_valid_kubernetes(path: Path) -> None:
    for document in documents(path):
        kubernetes_validate.validate(document, VERSION, strict=True)


def test_the_validator_refuses_an_unknown_field() -> None:
    [job] = documents(ROOT / "deploy" / "kubernetes" / "backfill-job.yaml")
    job["spec"]["completionsMode"] = "Indexed"  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, VERSION, strict=True)


def test_the_backfill_job_runs_one_segment_per_index() -> None:
    [job] = documents(ROOT / "deploy" / "kubernetes" / "backfill-job.yaml")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    [container] = spec["template"]["spec"]["containers"]
    args = container["args"]
    [segment] = [a.split("=", 1)[1] for a in args if a.startswith("--segment=")]
    assert segment == f"$(JOB_COMPLETION_INDEX)/{spec['completions']}"
    assert spec["parallelism"] == spec["completions"]
    # What Kubernetes passes once it expanded the index parses as our CLI expects.
    for index in range(spec["completions"]):
        expanded = [a.replace("$(JOB_COMPLETION_INDEX)", str(index)) for a in args]
        parsed = build_parser().parse_args(expanded)
        assert parsed.segment == parse_segment(f"{index}/{spec['completions']}")
        assert parsed.resume and parsed.checkpoints.startswith("redis://")


# --- the proxy's own manifests: deployment, service, configmap, pdb -----------------------

KUBE = ROOT / "deploy" / "kubernetes"


def one(name: str, kind: str) -> dict[str, Any]:
    [document] = documents(KUBE / name)
    assert document["kind"] == kind
    return document


def pod_of(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def test_every_manifest_of_the_proxy_is_there() -> None:
    kinds = {p.name: [d["kind"] for d in documents(p)] for p in MANIFESTS}
    assert kinds == {
        "backfill-job.yaml": ["Job"],
        "configmap.yaml": ["ConfigMap"],
        "deployment.yaml": ["Deployment"],
        "pdb.yaml": ["PodDisruptionBudget"],
        "service.yaml": ["Service"],
    }


def test_the_validator_refuses_an_unknown_field_of_a_deployment() -> None:
    deployment = one("deployment.yaml", "Deployment")
    [container] = pod_of(deployment)["containers"]
    container["readinessProbe"]["httpGet"]["paht"] = "/readyz"  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSION, strict=True)


def test_the_service_and_the_pdb_select_the_deployments_pods() -> None:
    deployment = one("deployment.yaml", "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = one("service.yaml", "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    pdb = one("pdb.yaml", "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] < deployment["spec"]["replicas"]
    # The Service carries the proxy port only; the admin port stays off it.
    [container] = pod_of(deployment)["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"proxy": 8080, "admin": 9090}
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["proxy"]


def test_the_deployment_probes_and_scrapes_the_admin_port() -> None:
    deployment = one("deployment.yaml", "Deployment")
    [container] = pod_of(deployment)["containers"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9090",
        "prometheus.io/path": "/metrics",
    }
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_the_pods_run_as_non_root_on_a_read_only_root_filesystem() -> None:
    for name, kind in (("deployment.yaml", "Deployment"), ("backfill-job.yaml", "Job")):
        pod = pod_of(one(name, kind))
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001  # the image's user (deploy/Dockerfile)
        for container in pod["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_every_secret_comes_from_a_secret_and_the_config_from_the_configmap() -> None:
    configmap = one("configmap.yaml", "ConfigMap")
    for name, kind in (("deployment.yaml", "Deployment"), ("backfill-job.yaml", "Job")):
        pod = pod_of(one(name, kind))
        [container] = pod["containers"]
        env = {e["name"]: e for e in container["env"]}
        for secret in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PGPASSWORD"):
            assert "value" not in env[secret]
            assert env[secret]["valueFrom"]["secretKeyRef"]["name"].startswith("shadowproxy-")
        if kind == "Deployment":
            assert env["SHADOWPROXY_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {
                "name": "shadowproxy-admin",
                "key": "token",
            }
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["config"]["configMap"]["name"] == configmap["metadata"]["name"]
        [mount] = [m for m in container["volumeMounts"] if m["name"] == "config"]
        # The config file the container is told to read is a key of the ConfigMap.
        words = " ".join(container.get("args", []))
        assert f"{mount['mountPath']}/shadowproxy.yaml" in words
        assert list(configmap["data"]) == ["shadowproxy.yaml"]
