"""The files in dashboards/, parsed: the Grafana dashboard's queries (panels, annotations,
variables), the Prometheus rules, and Grafana's variables rendered for a plain Prometheus.
Shared by the static checks (tests/unit/dashboards) and the live Prometheus
(tests/integration/dashboards)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"
DASHBOARD = DASHBOARDS / "shadowproxy.json"
ALERTS = DASHBOARDS / "alerts.yml"
PROMETHEUS = DASHBOARDS / "prometheus.yml"
ALERTS_TEST = DASHBOARDS / "alerts_test.yml"
README = DASHBOARDS / "README.md"

METRIC = re.compile(r"\bshadowproxy_[A-Za-z0-9_]+")
RECORDED = re.compile(r"\bshadowproxy:[A-Za-z0-9_:]+")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
VARIABLE_QUERY = re.compile(r"label_values\((.+),\s*(\w+)\)")

# What Grafana puts in place of its variables, for a query sent to Prometheus directly.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__range": "1h",
    "$__interval": "1m",
    "$route": ".*",
    "$instance": ".*",
}


@dataclass(frozen=True)
class Query:
    """One PromQL expression of the dashboard: ``where`` says which panel target,
    annotation or variable it is."""

    where: str
    expr: str


@cache
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@cache
def rules() -> dict[str, Any]:
    data = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def panels() -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows; rows themselves excluded."""
    out: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        if panel.get("type") == "row":
            out.extend(panel.get("panels", []))
        else:
            out.append(panel)
    return out


def annotations() -> list[dict[str, Any]]:
    """The dashboard's Prometheus annotation queries (not Grafana's built-in one)."""
    return [a for a in dashboard()["annotations"]["list"] if "expr" in a]


def variable_queries() -> list[tuple[str, str, str]]:
    """``(variable, series selector, label)`` of every ``label_values()`` variable."""
    out = []
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        query = query["query"] if isinstance(query, dict) else query
        match = VARIABLE_QUERY.fullmatch(query)
        assert match, query
        out.append((variable["name"], match.group(1), match.group(2)))
    return out


def all_rules() -> list[dict[str, Any]]:
    return [rule for group in rules()["groups"] for rule in group["rules"]]


def recording_rules() -> dict[str, str]:
    return {rule["record"]: rule["expr"] for rule in all_rules() if "record" in rule}


def panel_queries() -> list[Query]:
    return [
        Query(f"panel {panel['title']!r} {target['refId']}", target["expr"])
        for panel in panels()
        for target in panel["targets"]
    ]


def annotation_queries() -> list[Query]:
    return [Query(f"annotation {a['name']!r}", a["expr"]) for a in annotations()]


def rule_queries() -> list[Query]:
    return [
        Query(f"record {r['record']}" if "record" in r else f"alert {r['alert']}", r["expr"])
        for r in all_rules()
    ]


def dashboard_exprs() -> list[str]:
    """Every panel target's expression."""
    return [q.expr for q in panel_queries()]


def annotation_exprs() -> list[str]:
    return [q.expr for q in annotation_queries()]


def rule_exprs() -> list[str]:
    return [q.expr for q in rule_queries()]


def all_exprs() -> list[str]:
    return dashboard_exprs() + annotation_exprs() + rule_exprs()


def strip_strings(expr: str) -> str:
    return STRING.sub('""', expr)


def referenced(exprs: list[str]) -> set[str]:
    return {name for expr in exprs for name in METRIC.findall(strip_strings(expr))}


def render(expr: str, variables: Mapping[str, str] = GRAFANA_VARIABLES) -> str:
    """``expr`` with Grafana's variables replaced, longest name first ($__range before $r…)."""
    for variable, value in sorted(variables.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(variable, value)
    return expr
