"""``shadowproxy report`` on real sinks (a JSON-lines file with a backup, a Redis stream) and
a running instance: every format says what the records and counters say, the JSON follows the
published schema, no planted sensitive value is shown in clear, an unreachable instance is
said in the report, and bad input is a clear exit 2."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from prometheus_client import CollectorRegistry

from comparators.model import Comparison, Difference, Outcome
from proxy.experiment.publish import Experiment, Publisher
from proxy.experiment.sinks import make_sink
from proxy.metrics import Metrics
from proxy.readiness.verdict import wilson_upper
from proxy.shared import redactor
from tests.integration.conftest import REDIS_URL
from tests.integration.report.conftest import (
    EMAIL_NEW,
    EMAIL_OLD,
    ENV,
    QUERY_EMAIL,
    ROOT,
    SCHEMA,
    assert_no_secret,
    base_config,
    config_for,
    load_json,
    parse,
    plant,
    run_report,
    running_instance,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("report_env")]

VALIDATOR = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))


def validate(data: dict[str, Any]) -> None:
    errors = sorted(VALIDATOR.iter_errors(data), key=lambda e: list(e.path))
    assert not errors, "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


def all_formats(tmp_path: Path, config: str, *extra: str) -> dict[str, str]:
    out = {}
    for form in ("md", "html", "json"):
        path = tmp_path / f"report.{form}"
        assert run_report("-c", config, "--format", form, "-o", str(path), *extra) == 0
        out[form] = path.read_text(encoding="utf-8")
    return out


def target(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in data["targets"] if t["name"] == name)


def test_jsonl_sink_without_an_instance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sink = {"kind": "jsonl", "path": str(tmp_path / "m.jsonl"), "max_bytes": 4096, "backups": 3}
    raw = base_config(sink)
    raw["admin"] = {"port": 1}  # nothing listens: counters and readiness are unavailable
    planted = asyncio.run(plant(parse(raw)))
    files = sorted(p.name for p in tmp_path.glob("m.jsonl*"))
    assert len(files) > 1, "the records should span a rotation"
    with (tmp_path / "m.jsonl").open("a") as f:
        f.write('not json at all\n{"route": "users-get"}\n[1, 2]\n')
    config = config_for(tmp_path, raw)

    out = all_formats(tmp_path, config)
    err = capsys.readouterr().err
    assert "3 mismatch records malformed, skipped" in err
    assert "cannot read the instance's counters" in err

    data = json.loads(out["json"])
    validate(data)
    assert data["malformed_records"] == 3
    assert [t["name"] for t in data["targets"]] == ["users-get", "orders-get"]  # health: no shadow
    users, orders = target(data, "users-get"), target(data, "orders-get")
    assert users["records"] == planted.users  # the two older than 24 h are left out
    assert orders["records"] == planted.orders
    assert users["outcomes"] is None and users["mismatch_rate"] is None
    assert users["readiness"] is None
    assert not data["sources"]["counters"]["available"]
    assert not data["sources"]["readiness"]["available"]
    fields = {f["field"]: f["records"] for f in users["fields"]}
    assert fields["body.email"] == planted.users - planted.legacy
    assert fields["body.items[].profile"] == planted.users - planted.legacy
    assert fields["body.password"] == planted.legacy
    buckets = users["timeline"]["buckets"]
    assert users["timeline"]["bucket_seconds"] == 1800
    assert sum(b["mismatches"] for b in buckets) == planted.users
    filled = [b["mismatches"] for b in buckets if b["mismatches"]]
    assert max(filled) >= 3 and len(filled) >= 4  # the three of 130 minutes ago share one
    newest = users["examples"][0]
    assert len(users["examples"]) == 3 and newest["request_id"] in ("req-users-0", "req-users-1")
    by_path = {d["path"]: d for d in newest["differences"]}
    assert by_path["body.email"]["primary"].startswith("redacted:")
    assert by_path["body.name"] == {
        "path": "body.name", "kind": "changed", "primary": "Ada <b>|</b>", "shadow": "Ada `x`"
    }  # fmt: skip
    legacy = next(e for e in users["examples"] if e["request_id"] == "req-legacy")
    values = {d["path"]: (d["primary"], d["shadow"]) for d in legacy["differences"]}
    assert values["body.password"][0].startswith("redacted:")  # the guard hashed it
    assert values["body.owner"][0]["email"].startswith("redacted:")

    md = out["md"]
    assert "## users-get (route)" in md and "## orders-get (route)" in md
    assert "**unavailable**" in md and "Readiness is not known" in md
    assert f"| `body.email` | {planted.users - planted.legacy} | n/a |" in md
    assert '`"Ada <b>\\|</b>"`' in md  # a pipe in a value cannot break the table
    assert "<b>" not in md.replace('`"Ada <b>\\|</b>"`', "")
    html = out["html"]
    assert "Ada &lt;b&gt;|&lt;/b&gt;" in html and "<b>|</b>" not in html
    for text in out.values():
        assert_no_secret(text)


async def test_redis_sink_and_a_running_instance(
    tmp_path: Path, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sink = {"kind": "redis", "url": REDIS_URL, "stream": f"{prefix}:mismatches"}
    async with running_instance(sink) as instance:
        config = config_for(tmp_path, instance.raw)
        admin = ["--admin-url", instance.proxy.admin_url]
        out = await asyncio.to_thread(all_formats, tmp_path, config, *admin)
        only = tmp_path / "only.json"
        argv = ["-c", config, "--route", "users-get", "--format", "json", "-o", str(only)]
        assert await asyncio.to_thread(run_report, *argv, *admin) == 0
        proxy = instance.proxy

        def counted(outcome: str) -> int:
            labels = {"route": "users-get", "operation": "GET", "outcome": outcome}
            return int(proxy.value("shadowproxy_comparisons_total", **labels))

        matches, mismatches = counted("match"), counted("mismatch")
    assert "warning" not in capsys.readouterr().err

    data = json.loads(out["json"])
    validate(data)
    assert data["sources"]["sink"]["kind"] == "redis"
    assert data["sources"]["counters"]["available"] and data["sources"]["readiness"]["available"]
    users = target(data, "users-get")
    assert mismatches == instance.mismatches and matches == instance.users - mismatches
    assert users["outcomes"]["match"] == matches and users["outcomes"]["mismatch"] == mismatches
    assert users["comparisons"] == instance.users
    assert users["operations"] == {"GET": {"match": matches, "mismatch": mismatches}}
    rate = users["mismatch_rate"]
    assert rate["rate"] == pytest.approx(mismatches / instance.users)
    assert rate["upper95"] == pytest.approx(wilson_upper(mismatches, instance.users))
    assert 0 < rate["lower95"] < rate["rate"] < rate["upper95"] < 1
    assert users["records"] == mismatches
    fields = {f["field"]: (f["records"], f["counter"]) for f in users["fields"]}
    assert fields["body.email"] == (mismatches, mismatches)
    assert fields["body.name"] == (mismatches, mismatches)
    sides = {lat["side"]: lat for lat in users["latency"]}
    assert sides["primary"]["backends"] == ["legacy"] and sides["shadow"]["backends"] == ["modern"]
    assert sides["primary"]["samples"] == instance.users
    for lat in sides.values():
        assert 0 < lat["p50_seconds"] <= lat["p99_seconds"]
    verdicts = users["readiness"]
    assert [v["decision"] for v in verdicts] == ["flip_reads"]
    names = [c["name"] for c in verdicts[0]["criteria"]]
    assert names == [
        "comparisons", "mismatch_rate", "shadow_error_rate", "new_p99_seconds",
        "missing_operations",
    ]  # fmt: skip
    assert verdicts[0]["ready"] is False  # mismatch_rate fails
    orders = target(data, "orders-get")
    assert orders["outcomes"]["match"] == instance.orders and orders["records"] == 0
    assert orders["mismatch_rate"]["rate"] == 0 and orders["mismatch_rate"]["lower95"] == 0
    assert [t["name"] for t in data["targets"]] == ["users-get", "orders-get"]  # health: no shadow

    alone = load_json(only)
    validate(alone)
    assert [t["name"] for t in alone["targets"]] == ["users-get"]

    md = out["md"]
    assert "**flip reads: NOT READY**" in md
    assert "| `mismatch_rate` |" in md and "| **FAIL** |" in md
    assert f"| **all** | **{matches}** | **{mismatches}** |" in md
    assert "95% interval" in md
    html = out["html"]
    assert 'class="verdict not-ready"' in html and "missing_operations" in html
    for text in out.values():
        assert_no_secret(text)


async def test_redis_sink_with_constructed_records(tmp_path: Path, prefix: str) -> None:
    raw = base_config({"kind": "redis", "url": REDIS_URL, "stream": f"{prefix}:m"})
    raw["admin"] = {"port": 1}
    planted = await plant(parse(raw), minutes=[1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    config = config_for(tmp_path, raw)
    out = all_formats(tmp_path, config, "--since", "90m", "--examples", "2")
    data = json.loads(out["json"])
    validate(data)
    users = target(data, "users-get")
    assert users["records"] == planted.users  # the legacy record is 20 minutes old
    assert users["timeline"]["bucket_seconds"] == 120
    assert len(users["examples"]) == 2
    for text in out.values():
        assert_no_secret(text)


def test_unknown_since_unit_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path, base_config({"kind": "jsonl", "path": str(tmp_path / "m")}))
    with pytest.raises(SystemExit) as e:
        run_report("-c", config, "--since", "24y")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --since: unknown unit 'y' (known: s, m, h, d, w)" in err


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--resource", "users"], "--resource 'users': no such resource in the config "
         "(known: none)"),
        (["--route", "nope"], "--route 'nope': no such route in the config "
         "(known: users-get, orders-get, health)"),
    ],
)  # fmt: skip
def test_unknown_target_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: list[str], message: str
) -> None:
    config = config_for(tmp_path, base_config({"kind": "jsonl", "path": str(tmp_path / "m")}))
    assert run_report("-c", config, *option) == 2
    assert capsys.readouterr().err == f"shadowproxy: report: {message}\n"


def test_unreadable_sinks_are_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "a-directory"
    folder.mkdir()
    config = config_for(tmp_path, base_config({"kind": "jsonl", "path": str(folder)}))
    assert run_report("-c", config) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"shadowproxy: report: cannot read the mismatch sink '{folder}': ")

    down = {"kind": "redis", "url": "redis://127.0.0.1:1/0", "stream": "s"}
    config = config_for(tmp_path, base_config(down))
    assert run_report("-c", config) == 2
    err = capsys.readouterr().err
    assert err.startswith("shadowproxy: report: cannot read the mismatch sink (Redis ")


def test_a_missing_sink_file_is_an_empty_report_that_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = base_config({"kind": "jsonl", "path": str(tmp_path / "never-written.jsonl")})
    raw["admin"] = {"port": 1}
    out = tmp_path / "r.json"
    assert run_report("-c", config_for(tmp_path, raw), "--format", "json", "-o", str(out)) == 0
    data = load_json(out)
    validate(data)
    assert "does not exist: no mismatch has been recorded there" in data["warnings"][0]
    assert all(t["records"] == 0 for t in data["targets"])
    assert "does not exist" in capsys.readouterr().err


def test_an_unwritable_output_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = base_config({"kind": "jsonl", "path": str(tmp_path / "m.jsonl")})
    raw["admin"] = {"port": 1}
    out = tmp_path / "no-such-dir" / "r.md"
    assert run_report("-c", config_for(tmp_path, raw), "-o", str(out)) == 2
    assert f"cannot write '{out}'" in capsys.readouterr().err


async def test_store_mode_records_name_their_resource_and_stores(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "config" / "users.yaml").read_text())
    raw["sink"] = {"kind": "jsonl", "path": str(tmp_path / "m.jsonl")}
    raw["admin"] = {"port": 1}
    settings = parse(raw)
    metrics = Metrics.create(CollectorRegistry())
    sink = make_sink(settings.sink, metrics)
    publisher = Publisher(metrics=metrics, sink=sink, redactor=redactor(settings, ENV))
    stores = {"resource": "users", "primary_store": "postgres", "shadow_store": "dynamodb"}
    for operation, path in (("get", "/users/7f0c6a59"), ("lookup", f"/users?email={QUERY_EMAIL}")):
        differences = (
            Difference("email", "changed", EMAIL_OLD, EMAIL_NEW),
            Difference("roles[]", "added", None, "admin"),
        )
        publisher.publish(
            Experiment(
                route="users", operation=operation, method="GET", path=path,
                request_id=f"req-{operation}", requester=None, primary_status=200,
                shadow_status=200, primary_seconds=0.001, shadow_seconds=0.002,
                comparison=Comparison(Outcome.MISMATCH, differences), extra=stores,
            )
        )  # fmt: skip
    await sink.close()
    config = config_for(tmp_path, raw)
    out = all_formats(tmp_path, config, "--resource", "users")
    data = json.loads(out["json"])
    validate(data)
    (users,) = data["targets"]
    assert (users["name"], users["kind"], users["records"]) == ("users", "resource", 2)
    assert {e["operation"] for e in users["examples"]} == {"get", "lookup"}
    assert all(
        (e["primary_store"], e["shadow_store"]) == ("postgres", "dynamodb")
        for e in users["examples"]
    )
    assert {f["field"]: f["records"] for f in users["fields"]} == {"email": 2, "roles[]": 2}
    assert "| field | kind | primary (postgres) | shadow (dynamodb) |" in out["md"]
    assert "## users (resource)" in out["md"]
    assert "primary (postgres)" in out["html"]
    for text in out.values():
        assert_no_secret(text)
    assert run_report("-c", config, "--route", "users") == 2
