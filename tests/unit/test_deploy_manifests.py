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
