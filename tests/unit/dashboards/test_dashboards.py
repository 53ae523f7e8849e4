"""The Grafana dashboard and the Prometheus rules reference only metrics the code exports.

The exported names come from the registries themselves: ``Metrics.create`` from
``proxy.metrics`` plus every other ``*Metrics`` class with a ``create(registry)`` constructor
found under ``proxy/`` (the cache's and the repairer's, when they exist). Each is created in a
fresh ``CollectorRegistry`` and its families are read back with ``registry.collect()``.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from proxy.metrics import Metrics
from tests.support.dashboards import (
    ALERTS,
    ALERTS_TEST,
    DASHBOARDS,
    METRIC,
    PROMETHEUS,
    README,
    RECORDED,
    ROOT,
    all_exprs,
    all_rules,
    annotation_exprs,
    annotations,
    dashboard,
    dashboard_exprs,
    panels,
    recording_rules,
    referenced,
    render,
    rule_exprs,
    rules,
    strip_strings,
    variable_queries,
)

SELECTOR = re.compile(r"\b(shadowproxy[_:][A-Za-z0-9_:]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
CALL = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*\(")
LEGEND = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
RECORD_NAME = re.compile(r"^shadowproxy:[a-z0-9_]+:[a-z0-9_]+$")
DURATION = re.compile(r"^\d+[smhdw]$")

# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = frozenset({"instance", "job"})
# Series that are not shadowproxy's own but may be referenced.
PROMETHEUS_SERIES = {"up": TARGET_LABELS}
PROMQL_CALLS = frozenset(
    {
        # aggregations and modifiers
        "sum", "min", "max", "avg", "count", "topk", "bottomk", "quantile", "group",
        "stddev", "stdvar", "count_values", "by", "without", "on", "ignoring",
        "group_left", "group_right", "bool",
        # functions
        "rate", "irate", "increase", "delta", "idelta", "deriv", "predict_linear",
        "histogram_quantile", "abs", "ceil", "floor", "round", "clamp", "clamp_min",
        "clamp_max", "absent", "absent_over_time", "changes", "resets", "vector", "scalar",
        "time", "timestamp", "label_replace", "label_join", "sort", "sort_desc",
        "avg_over_time", "min_over_time", "max_over_time", "sum_over_time",
        "count_over_time", "last_over_time", "quantile_over_time", "present_over_time",
    }
)  # fmt: skip
COUNTER_FUNCTIONS = frozenset({"rate", "irate", "increase"})
RANGE_FUNCTIONS = COUNTER_FUNCTIONS | {"delta", "idelta", "deriv", "predict_linear", "changes"}


@dataclasses.dataclass(frozen=True)
class Exported:
    family: str
    kind: str  # counter, gauge, histogram, ...
    labels: frozenset[str]


# ---------------------------------------------------------------- what the code exports


def _metrics_classes() -> Iterator[Any]:
    """Metrics, then every other ``class *Metrics`` with a ``create`` under proxy/."""
    yield Metrics
    for path in sorted((ROOT / "proxy").rglob("*.py")):
        if path.name == "__main__.py":
            continue
        text = path.read_text(encoding="utf-8")
        names = re.findall(r"^class (\w+Metrics)\b", text, re.MULTILINE)
        if not names or "def create(" not in text:
            continue
        module_name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # an optional dependency is missing: nothing to check against
            continue
        for name in names:
            cls = getattr(module, name, None)
            if cls is not None and cls is not Metrics and callable(getattr(cls, "create", None)):
                yield cls


def _labelnames(collector: Any) -> frozenset[str]:
    # prometheus_client keeps the declared label names only on this attribute.
    return frozenset(getattr(collector, "_labelnames", ()))


@cache
def exported() -> dict[str, list[Exported]]:
    """Family name -> definitions (more than one if two classes define the same name)."""
    found: dict[str, list[Exported]] = {}
    for cls in _metrics_classes():
        registry = CollectorRegistry()
        metrics = cls.create(registry)
        labels: dict[str, frozenset[str]] = {}
        if dataclasses.is_dataclass(metrics):
            for field in dataclasses.fields(metrics):
                collector = getattr(metrics, field.name)
                if not hasattr(collector, "describe"):  # e.g. the memo of labelled children
                    continue
                for family in collector.describe():
                    labels[family.name] = _labelnames(collector)
        for family in registry.collect():
            definition = Exported(family.name, family.type, labels.get(family.name, frozenset()))
            found.setdefault(family.name, []).append(definition)
    return found


def _series_names(definition: Exported) -> dict[str, frozenset[str]]:
    """The series names a family is exposed under, with their label names."""
    name, labels = definition.family, definition.labels | TARGET_LABELS
    if definition.kind == "counter":
        return {f"{name}_total": labels}
    if definition.kind == "histogram":
        return {f"{name}_bucket": labels | {"le"}, f"{name}_sum": labels, f"{name}_count": labels}
    if definition.kind == "summary":
        return {name: labels | {"quantile"}, f"{name}_sum": labels, f"{name}_count": labels}
    return {name: labels}


@cache
def exposed() -> dict[str, frozenset[str]]:
    series: dict[str, frozenset[str]] = {}
    for definitions in exported().values():
        for definition in definitions:
            for name, labels in _series_names(definition).items():
                series[name] = series.get(name, frozenset()) | labels
    return series


@cache
def kind_of() -> dict[str, str]:
    kinds: dict[str, str] = {}
    for definitions in exported().values():
        for definition in definitions:
            for name in _series_names(definition):
                if name.endswith(("_bucket", "_sum", "_count")) and definition.kind in (
                    "histogram",
                    "summary",
                ):
                    kinds[name] = "counter"
                else:
                    kinds[name] = definition.kind
    return kinds


# ---------------------------------------------------------------- PromQL helpers


def _balanced(expr: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in strip_strings(expr):
        if char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack


def _call_argument(expr: str, open_paren: int) -> str:
    depth = 0
    for i in range(open_paren, len(expr)):
        if expr[i] == "(":
            depth += 1
        elif expr[i] == ")":
            depth -= 1
            if depth == 0:
                return expr[open_paren + 1 : i]
    raise AssertionError(f"unbalanced call in {expr!r}")


def _enclosing_call(expr: str, position: int) -> str | None:
    """The function whose argument list holds ``position`` (innermost), if any."""
    depth = 0
    for i in range(position - 1, -1, -1):
        if expr[i] == ")":
            depth += 1
        elif expr[i] == "(":
            if depth == 0:
                match = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\s*$", expr[:i])
                return match.group(1) if match else None
            depth -= 1
    return None


@cache
def recorded_labels() -> dict[str, frozenset[str]]:
    """Labels a recording rule's series carry: its outermost grouping labels, approximated
    as every label named in a ``by``/``on`` clause of its expression."""
    out: dict[str, frozenset[str]] = {}
    for name, expr in recording_rules().items():
        labels: set[str] = set()
        for group in GROUPING.findall(expr):
            labels.update(part.strip() for part in group.split(",") if part.strip())
        out[name] = frozenset(labels - {"le"})
    return out


def _series_labels(name: str) -> frozenset[str]:
    if name in exposed():
        return exposed()[name]
    if name in recorded_labels():
        return recorded_labels()[name]
    return frozenset()


def _problems(expr: str) -> list[str]:
    """Everything implausible about one PromQL expression."""
    problems: list[str] = []
    bare = strip_strings(expr)
    if not _balanced(expr):
        problems.append("unbalanced brackets")
    for name in METRIC.findall(bare):
        if name not in exposed():
            problems.append(f"{name} is not exported by proxy/")
    for name in RECORDED.findall(bare):
        if name not in recording_rules():
            problems.append(f"{name} is not a recording rule in alerts.yml")
    for match in CALL.finditer(bare):
        if match.group(1) not in PROMQL_CALLS:
            problems.append(f"unknown function {match.group(1)}()")
        if match.group(1) in RANGE_FUNCTIONS:
            argument = _call_argument(bare, match.end() - 1).strip()
            if not re.search(r"\[[^\]]+\]$", argument):
                problems.append(f"{match.group(1)}() without a range: {argument}")
        if match.group(1) == "histogram_quantile":
            argument = _call_argument(bare, match.end() - 1)
            groups = [g.replace(" ", "").split(",") for g in GROUPING.findall(argument)]
            if "_bucket" in argument and not any("le" in g for g in groups):
                problems.append("histogram_quantile() over buckets not grouped by le")
    # Counters only make sense under rate()/increase(), gauges never do.
    for match in METRIC.finditer(bare):
        kind = kind_of().get(match.group(0))
        call = _enclosing_call(bare, match.start())
        if kind == "counter" and call not in COUNTER_FUNCTIONS:
            problems.append(f"counter {match.group(0)} used outside rate()/increase()")
        if kind == "gauge" and call in COUNTER_FUNCTIONS:
            problems.append(f"gauge {match.group(0)} used under {call}()")
    # Label names: in selectors, on that series; in grouping clauses, on some series used.
    available: set[str] = set(TARGET_LABELS)
    for name, matchers in SELECTOR.findall(bare) + [
        (name, "") for name in re.findall(r"\bup\b", bare)
    ]:
        labels = PROMETHEUS_SERIES.get(name) or _series_labels(name)
        available |= labels
        for label in MATCHER.findall(matchers):
            if label not in labels:
                problems.append(f"{name} has no label {label!r}")
    for name in set(METRIC.findall(bare)) | set(RECORDED.findall(bare)):
        available |= _series_labels(name)
    for group in GROUPING.findall(bare):
        for label in (part.strip() for part in group.split(",")):
            if label and label not in available:
                problems.append(f"grouping by {label!r}, which no series used here has")
    return problems


# ---------------------------------------------------------------- exported names


def test_exported_names_come_from_the_registries() -> None:
    names = set(exposed())
    assert "shadowproxy_requests_total" in names
    assert "shadowproxy_backend_request_duration_seconds_bucket" in names
    assert "shadowproxy_shadow_queue_depth" in names
    assert "shadowproxy_requests" not in names  # counters are only exposed with _total
    assert exposed()["shadowproxy_requests_total"] >= {"route", "status"}


def test_every_referenced_metric_is_exported() -> None:
    unknown = sorted(referenced(all_exprs()) - set(exposed()))
    assert not unknown, f"referenced but not exported by proxy/: {unknown}"


def test_the_problem_finder_catches_mistakes() -> None:
    cases = {
        "sum(rate(shadowproxy_requests[5m]))": "not exported",
        "sum(rate(shadowproxy_requests_total[5m])": "unbalanced",
        "sum(rat(shadowproxy_requests_total[5m]))": "unknown function",
        "sum(shadowproxy_requests_total)": "outside rate",
        "rate(shadowproxy_shadow_queue_depth[5m])": "gauge",
        "rate(shadowproxy_requests_total)": "without a range",
        'rate(shadowproxy_backend_errors_total{route="x"}[5m])': "no label 'route'",
        "sum by (field) (rate(shadowproxy_requests_total[5m]))": "grouping by 'field'",
        "histogram_quantile(0.9, sum by (route) "
        "(rate(shadowproxy_backend_request_duration_seconds_bucket[5m])))": "by le",
        "shadowproxy:nope:rate5m > 0": "not a recording rule",
    }
    for expr, expected in cases.items():
        assert any(expected in problem for problem in _problems(expr)), (expr, _problems(expr))
    assert _problems('sum by (route) (rate(shadowproxy_requests_total{route=~"a|b"}[5m]))') == []


# ---------------------------------------------------------------- dashboard


def test_dashboard_parses_and_has_the_variables() -> None:
    data = dashboard()
    assert data["schemaVersion"] >= 36
    assert data["uid"] and data["title"]
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    queries = {name: (series, label) for name, series, label in variable_queries()}
    assert set(queries) == {"route", "instance"}
    for name, (series, label) in queries.items():
        # A bare counter is fine here: label_values() lists series, it does not graph them.
        assert [p for p in _problems(series) if "outside rate()" not in p] == []
        assert label == name and label in _series_labels(METRIC.findall(series)[0])


def test_every_panel_has_a_unique_id_and_an_expression() -> None:
    ids = [panel["id"] for panel in dashboard()["panels"]]
    ids += [p["id"] for row in dashboard()["panels"] for p in row.get("panels", [])]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    assert panels()
    for panel in panels():
        assert panel["title"], panel["id"]
        assert panel["targets"], f"panel {panel['title']!r} has no target"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_panels_fit_the_grid_without_overlapping() -> None:
    boxes = []
    for panel in dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        boxes.append((panel["title"], pos["x"], pos["y"], pos["w"], pos["h"]))
    for i, (a, ax, ay, aw, ah) in enumerate(boxes):
        for b, bx, by, bw, bh in boxes[i + 1 :]:
            overlap = ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah
            assert not overlap, f"{a!r} overlaps {b!r}"


@pytest.mark.parametrize("expr", dashboard_exprs() + annotation_exprs())
def test_dashboard_expression_is_plausible(expr: str) -> None:
    assert _problems(expr) == []


def test_dashboard_selectors_honour_the_instance_variable() -> None:
    for expr in dashboard_exprs() + annotation_exprs():
        for name, matchers in SELECTOR.findall(expr):
            assert 'instance=~"$instance"' in matchers, (name, expr)
        assert len(SELECTOR.findall(expr)) == len(METRIC.findall(strip_strings(expr))), expr


def test_legends_name_labels_the_query_keeps() -> None:
    for panel in panels():
        for target in panel["targets"]:
            kept: set[str] = set()
            for group in GROUPING.findall(target["expr"]):
                kept.update(part.strip() for part in group.split(","))
            for label in LEGEND.findall(target.get("legendFormat", "")):
                assert label in kept, (panel["title"], label)


def test_dashboard_covers_the_required_views() -> None:
    exprs = " ".join(dashboard_exprs())
    for needed in (
        "shadowproxy_requests_total",
        "histogram_quantile(0.5,",
        "histogram_quantile(0.99,",
        "sum by (outcome)",
        'outcome=~"match|mismatch|transient|noise"',
        "topk(",
        "shadowproxy_mismatch_fields_total",
        "shadowproxy_shadow_queue_depth",
        "shadowproxy_shadow_dropped_total",
        "shadowproxy_backend_errors_total",
        "shadowproxy_diff_summarised_total",
        "shadowproxy_compare_skipped_total",
        "shadowproxy_sink_records_total",
        "shadowproxy_dual_write_failures_total",
        "shadowproxy_flag_state",
        "shadowproxy_flag_changes_total",
        "shadowproxy_flag_store_up",
        "shadowproxy_readiness_ready",
        "shadowproxy_guardrail_rollbacks_total",
        "shadowproxy_build_info",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert needed in exprs, needed
    for optional in ("shadowproxy_repair_log_depth", "shadowproxy_cache_requests_total"):
        if optional in exposed():
            assert optional in exprs, optional


def test_flips_and_rollbacks_are_annotations() -> None:
    by_name = {a["name"]: a for a in annotations()}
    assert "changes(shadowproxy_flag_state" in by_name["Flag flips"]["expr"]
    assert "shadowproxy_guardrail_rollbacks_total" in by_name["Guardrail rollbacks"]["expr"]
    for annotation in by_name.values():
        assert annotation["datasource"]["uid"] == "${datasource}", annotation["name"]
        assert annotation["enable"] is True, annotation["name"]
        grouped = GROUPING.search(annotation["expr"])
        assert grouped, annotation["name"]
        for label in LEGEND.findall(annotation["titleFormat"]):
            assert label in grouped.group(1), annotation["name"]


# ---------------------------------------------------------------- rules


def test_rules_parse_and_are_well_formed() -> None:
    groups = rules()["groups"]
    assert groups
    assert len({g["name"] for g in groups}) == len(groups)
    names = [rule.get("record") or rule.get("alert") for rule in all_rules()]
    assert len(names) == len(set(names)), names
    for rule in all_rules():
        assert ("record" in rule) != ("alert" in rule), rule
        assert isinstance(rule["expr"], str) and rule["expr"].strip(), rule
        if "record" in rule:
            assert RECORD_NAME.match(rule["record"]), rule["record"]
            continue
        assert rule["alert"].startswith("Shadowproxy"), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]
        if "for" in rule:
            assert DURATION.match(rule["for"]), rule["alert"]


def test_recording_rules_are_defined_before_use() -> None:
    defined: set[str] = set()
    for rule in all_rules():
        for name in RECORDED.findall(strip_strings(rule["expr"])):
            assert name in defined, f"{name} used before it is recorded"
        if "record" in rule:
            defined.add(rule["record"])


@pytest.mark.parametrize("expr", rule_exprs())
def test_rule_expression_is_plausible(expr: str) -> None:
    assert _problems(expr) == []


def test_the_required_alerts_exist() -> None:
    alerts = {rule["alert"]: rule for rule in all_rules() if "alert" in rule}
    assert "shadowproxy:mismatch_ratio:rate5m" in recording_rules()
    mismatch = alerts["ShadowproxyMismatchRatioHigh"]
    assert "shadowproxy:mismatch_ratio:rate5m" in mismatch["expr"]
    assert mismatch["for"] == "10m"
    by_metric = {
        "shadowproxy_shadow_dropped_total": "drops",
        "shadowproxy_dual_write_failures_total": "dual-write failures",
        "shadowproxy_repair_append_failures_total": "keys the repair log did not take",
        "shadowproxy_sink_records_total": "sink errors",
        "shadowproxy_internal_errors_total": "internal errors",
        "shadowproxy_flag_store_up": "the flag store down",
        "shadowproxy_guardrail_rollbacks_total": "a guardrail rollback",
    }
    exprs = "\n".join(rule_exprs())
    for metric, what in by_metric.items():
        assert metric in exprs, what
    for name in (
        "ShadowproxyShadowErrorsHigh",
        "ShadowproxyPrimary5xxHigh",
        "ShadowproxyFlagStoreDown",
        "ShadowproxyGuardrailRolledBack",
    ):
        assert name in alerts
    if "shadowproxy_repair_log_depth" in exposed():
        assert alerts["ShadowproxyRepairLogNotEmpty"]["for"] == "15m"
        assert "ShadowproxyRepairLogGrowing" in alerts


# ---------------------------------------------------------------- scrape config and docs


def test_prometheus_config_scrapes_the_admin_port_and_loads_the_rules() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    assert config["rule_files"] == ["alerts.yml"]
    for rule_file in config["rule_files"]:
        assert (DASHBOARDS / rule_file).is_file()
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "shadowproxy"]
    assert job["metrics_path"] == "/metrics"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == ["127.0.0.1:9090"]
    assert 'job="shadowproxy"' in ALERTS.read_text(encoding="utf-8")


def test_readme_explains_every_panel_and_alert() -> None:
    text = README.read_text(encoding="utf-8")
    for panel in panels():
        assert panel["title"] in text, panel["title"]
    for rule in all_rules():
        assert (rule.get("alert") or rule["record"]) in text, rule


# ---------------------------------------------------------------- promtool, when installed

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="no promtool")


def _promtool(*args: str, cwd: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None
    done = subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_accepts_the_rules_config_and_rule_tests() -> None:
    _promtool("check", "rules", ALERTS.name, cwd=DASHBOARDS)
    _promtool("check", "config", PROMETHEUS.name, cwd=DASHBOARDS)
    _promtool("test", "rules", ALERTS_TEST.name, cwd=DASHBOARDS)


@needs_promtool
def test_promtool_parses_the_dashboard_queries(tmp_path: Path) -> None:
    rendered = [
        {"record": f"dashboard:query_{i}:check", "expr": render(expr)}
        for i, expr in enumerate(dashboard_exprs() + annotation_exprs())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rendered}]}))
    _promtool("check", "rules", path.name, cwd=tmp_path)
