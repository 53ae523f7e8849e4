"""The resource API's OpenAPI document: valid OpenAPI 3.1, generated from the resource schema
(so every shipped config's resources are described as declared), and the answers the schema
renders conform to it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp import web
from openapi_spec_validator import validate
from prometheus_client import CollectorRegistry

from proxy.app import build
from proxy.control.openapi import admin_document
from proxy.errors import ConfigError
from proxy.resources.openapi import resource_document
from proxy.settings import ResourceSettings, load_settings, settings_from_mapping
from proxy.store.schema import Schema

NO_NUL = "^[^\\u0000]*$"
CONFIGS = sorted(Path("config").glob("*.yaml"))
EVERY_TYPE = {
    "id": {"type": "int"},
    "name": {"type": "string", "required": True},
    "price": {"type": "decimal", "nullable": False},
    "ratio": {"type": "float"},
    "active": {"type": "bool"},
    "seen_at": {"type": "datetime"},
    "born": {"type": "date"},
    "ref": {"type": "uuid"},
    "doc": {"type": "json"},
    "scores": {"type": "list<int>"},
    "tags": {"type": "set<string>"},
}


def raw_of(fields: dict[str, Any], **resource: Any) -> dict[str, Any]:
    return {
        "backends": {"pg": {"kind": "postgres", "dsn": "postgresql://u@127.0.0.1:1/x"}},
        "resources": {
            "items": {
                "prefix": "/items",
                "key": "id",
                "fields": fields,
                "stores": {"postgres": {"backend": "pg", "table": "items"}},
                "flags": {"read_from": "postgres", "write_to": ["postgres"]},
                **resource,
            }
        },
        "flags": {"kind": "memory"},
    }


def settings_of(fields: dict[str, Any], **resource: Any) -> ResourceSettings:
    return settings_from_mapping(raw_of(fields, **resource), env={}).resources["items"]


def doc_of(*resources: ResourceSettings, rate_limited: bool = False) -> dict[str, Any]:
    return resource_document(((Schema(r), r) for r in resources), rate_limited=rate_limited)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_gives_a_valid_document(path: Path) -> None:
    settings = load_settings(path, env={})
    doc = doc_of(*settings.resources.values())

    validate(doc)
    for resource in settings.resources.values():
        p = resource.prefix
        assert {m for m in doc["paths"][p] if m != "parameters"} == {"get", "post"}
        assert set(doc["paths"][f"{p}/{{{resource.key}}}"]) == {
            "parameters", "get", "put", "patch", "delete",
        }  # fmt: skip
        assert set(doc["paths"][f"{p}/batch"]) == {"post"}
        assert set(doc["paths"][f"{p}/batch-get"]) == {"post"}


def test_every_field_type_is_described_with_its_nullability_and_requirement() -> None:
    doc = doc_of(settings_of(EVERY_TYPE))
    validate(doc)
    schemas = doc["components"]["schemas"]
    create = schemas["items.Create"]

    assert create["required"] == ["id", "name", "price"]
    assert create["additionalProperties"] is False
    assert schemas["items.Replace"]["required"] == ["name", "price"]
    assert "required" not in schemas["items.Patch"]
    assert create["properties"]["ratio"] == {"anyOf": [{"type": "number"}, {"type": "null"}]}
    assert create["properties"]["price"]["anyOf"][0] == {"type": "number"}  # or a string
    assert schemas["items.Record"]["properties"]["tags"] == {
        "type": "array", "items": {"type": "string", "pattern": NO_NUL}, "uniqueItems": True,
    }  # fmt: skip
    query = {p["name"] for p in doc["paths"]["/items"]["get"]["parameters"]}
    # every scalar field filters; json, lists and sets cannot
    assert query == {*EVERY_TYPE} - {"doc", "scores", "tags"} | {"limit", "cursor", "fields"}


def test_what_the_schema_renders_conforms_to_the_record_schema() -> None:
    resource = settings_of(EVERY_TYPE)
    schema = Schema(resource)
    record_schema = doc_of(resource)["components"]["schemas"]["items.Record"]
    inputs = [
        {"id": 1, "name": "a", "price": "10.50"},
        {
            "id": -(2**63), "name": "", "price": 1e-5, "ratio": -0.0, "active": False,
            "seen_at": "2024-05-01T14:00:00+02:00", "born": "2000-02-29",
            "ref": "6F1C2A9E-3B7D-4E21-9A55-0C8E2F4B7D10", "doc": {"a": [1, None]},
            "scores": [3, 1, 3], "tags": ["b", "a"],
        },
    ]  # fmt: skip
    for body in inputs:
        jsonschema.validate(body, doc_of(resource)["components"]["schemas"]["items.Create"])
        rendered = json.loads(schema.dumps(schema.validate(body, partial=False)))
        jsonschema.validate(rendered, record_schema)


def test_statuses_follow_the_config() -> None:
    plain = doc_of(settings_of(EVERY_TYPE))
    unique = doc_of(settings_of(EVERY_TYPE, indexes={"by_name": {"field": "name", "unique": True}}))
    limited = doc_of(settings_of(EVERY_TYPE), rate_limited=True)

    def statuses(doc: dict[str, Any], path: str, method: str) -> set[str]:
        return set(doc["paths"][path][method]["responses"])

    assert statuses(plain, "/items/{id}", "put") == {
        "200", "400", "413", "415", "422", "500", "502", "503", "504",
    }  # fmt: skip
    assert "409" in statuses(unique, "/items/{id}", "put")
    assert statuses(plain, "/items/{id}", "delete") >= {"204", "404"}
    assert all(
        "429" in responses
        for path, item in limited["paths"].items()
        if path != "/openapi.json"
        for method, op in item.items()
        if method != "parameters"
        for responses in [op["responses"]]
    )


def test_the_document_path_is_not_a_resource_prefix() -> None:
    with pytest.raises(ConfigError, match=r"openapi\.json.*reserved"):
        settings_of(EVERY_TYPE, prefix="/openapi.json")


def served_routes(app: web.Application) -> set[tuple[str, str]]:
    """``(path template, method)`` of every route, path parameters named ``{…}``."""
    return {
        (re.sub(r"\{[^}]+\}", "{}", route.resource.canonical), route.method.lower())
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (re.sub(r"\{[^}]+\}", "{}", path), method)
        for path, item in doc["paths"].items()
        for method in item
        if method != "parameters"
    }


def test_the_documents_name_exactly_the_routes_both_ports_serve(tmp_path: Path) -> None:
    raw = {**raw_of(EVERY_TYPE), "sink": {"kind": "jsonl", "path": str(tmp_path / "m.jsonl")}}
    env = {"SHADOWPROXY_REDACTION_KEY": "k" * 32}
    settings = settings_from_mapping(raw, env=env)
    apps = build(settings, registry=CollectorRegistry(), env=env)

    assert served_routes(apps.proxy) == documented(doc_of(settings.resources["items"]))
    assert served_routes(apps.admin) - documented(admin_document()) == {
        ("/login", "post"), ("/logout", "post"),
    }  # fmt: skip
    validate(admin_document())


def test_what_the_schema_refuses_the_document_refuses_where_it_can_say_so() -> None:
    schemas = doc_of(settings_of(EVERY_TYPE))["components"]["schemas"]
    refused = [
        ("items.Patch", {"id": 1}),  # nothing to update besides the key
        ("items.Patch", {}),
        ("items.Create", {"id": 1, "name": "a\x00b", "price": 1}),  # PostgreSQL has no NUL
        ("items.Create", {"id": 1, "name": "a", "price": None}),  # not nullable
        ("items.Create", {"id": 1, "name": "a", "price": 1, "extra": 1}),
    ]
    for name, body in refused:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(body, schemas[name])
    jsonschema.validate({"id": 1, "ratio": 0.5}, schemas["items.Patch"])
