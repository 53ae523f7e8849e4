"""The admin API's OpenAPI 3.1 document, written out once for its fixed endpoints
(``proxy.control.admin``, ``proxy.control.flags_api``, ``proxy.control.triage``).

The guarded endpoints name the two ways to send the admin token (``Authorization: Bearer``
or ``X-Admin-Token``); the triage page's form login and its cookies are not a security
scheme of the JSON API.
"""

from __future__ import annotations

from typing import Any

from proxy.control.admin import MAX_MISMATCHES
from proxy.openapi import OPENAPI_OPERATION, OPENAPI_PATH, document, error_responses, json_body

_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"adminToken": []}]
_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "the admin token"},
    "adminToken": {"type": "apiKey", "in": "header", "name": "X-Admin-Token"},
}
_GUARDED = {401, 403}
_AUDIT_ENTRY: dict[str, Any] = {
    "type": "object",
    "required": ["time", "actor", "target", "flag", "old", "new", "reason", "forced"],
    "properties": {
        "time": {"type": "number"},
        "actor": {"type": "string"},
        "target": {"type": "string"},
        "flag": {"type": "string"},
        "old": {},
        "new": {},
        "reason": {"type": "string"},
        "forced": {"type": "boolean"},
    },
}
_STORE_HEALTH: dict[str, Any] = {
    "type": "object",
    "required": ["healthy", "last_error"],
    "properties": {
        "healthy": {"type": "boolean"},
        "last_error": {"type": ["string", "null"]},
    },
}


def _limit(maximum: int, default: int) -> dict[str, Any]:
    return {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": maximum, "default": default},
    }


def _query(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": description,
    }


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def _ok(schema: dict[str, Any], errors: set[int]) -> dict[str, Any]:
    return {"200": json_body(schema, "the answer"), **error_responses(errors)}


def _guarded(operation: dict[str, Any]) -> dict[str, Any]:
    return {**operation, "security": _SECURITY}


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


_VERDICTS = {"type": "array", "items": {"type": "object"}}
_READY_CHECK: dict[str, Any] = {
    "type": "object",
    "required": ["ok", "required", "detail"],
    "properties": {
        "ok": {"type": "boolean"},
        "required": {"type": "boolean"},
        "detail": {"type": ["string", "null"]},
    },
}


def _readyz(status: str) -> dict[str, Any]:
    return _object(
        ["status", "not_ready", "checks"],
        status={"const": status},
        not_ready={"type": "array", "items": {"type": "string"}},
        checks={"type": "object", "additionalProperties": _READY_CHECK},
    )


PATHS: dict[str, Any] = {
    OPENAPI_PATH: {"get": {**OPENAPI_OPERATION["get"], "operationId": "admin_openapi"}},
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics, combined over the workers",
            "responses": {
                "200": {
                    "description": "the text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/healthz": {
        "get": {
            "operationId": "healthz",
            "summary": "always 200; degraded when the flag store is unreachable",
            "responses": _ok(
                _object(
                    ["status", "shadow_queue_depth", "flag_store"],
                    status={"enum": ["ok", "degraded"]},
                    shadow_queue_depth={"type": "integer", "minimum": 0},
                    flag_store=_STORE_HEALTH,
                ),
                set(),
            ),
        }
    },
    "/readyz": {
        "get": {
            "operationId": "readyz",
            "summary": "200 when this instance may take traffic: listening, flags loaded, "
            "the stores it reads from reachable; 503 naming what is not",
            "responses": {
                "200": json_body(_readyz("ready"), "ready"),
                "503": json_body(_readyz("not_ready"), "not ready: `not_ready` names why"),
            },
        }
    },
    "/mismatches": {
        "get": _guarded(
            {
                "operationId": "mismatches",
                "summary": "the newest redacted mismatch records",
                "parameters": [_limit(MAX_MISMATCHES, 50)],
                "responses": _ok(
                    _object(
                        ["count", "mismatches"],
                        count={"type": "integer", "minimum": 0},
                        mismatches={"type": "array", "items": {"type": "object"}},
                    ),
                    {400, *_GUARDED},
                ),
            }
        )
    },
    "/flags": {
        "get": _guarded(
            {
                "operationId": "flags_show",
                "summary": "every live flag, the flag store's version and health",
                "responses": _ok(
                    _object(
                        ["version", "flags", "store"],
                        version={},
                        flags={"type": "object"},
                        store=_STORE_HEALTH,
                    ),
                    _GUARDED,
                ),
            }
        )
    },
    "/flags/history": {
        "get": _guarded(
            {
                "operationId": "flags_history",
                "summary": "the flag audit, newest first",
                "parameters": [_limit(1000, 50), _query("target", "only this resource or route")],
                "responses": _ok(
                    _object(["history"], history={"type": "array", "items": _AUDIT_ENTRY}),
                    {400, *_GUARDED},
                ),
            }
        )
    },
    "/flags/{name}": {
        "put": _guarded(
            {
                "operationId": "flags_set",
                "summary": "change one flag (audited); the flip gate may refuse it",
                "parameters": [
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "description": "`<target>.<flag>`, e.g. `users.read_from`",
                        "schema": {"type": "string"},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["value", "reason"],
                                "additionalProperties": False,
                                "properties": {
                                    "value": {},
                                    "reason": {"type": "string", "minLength": 1},
                                    "force": {"type": "boolean", "default": False},
                                },
                            }
                        }
                    },
                },
                "responses": _ok(
                    _object(["changed"], changed=_AUDIT_ENTRY),
                    {400, 404, 409, 413, 422, 503, *_GUARDED},
                ),
            }
        )
    },
    "/readiness": {
        "get": _guarded(
            {
                "operationId": "readiness",
                "summary": "the readiness verdicts, every criterion measured vs its threshold",
                "parameters": [_query("target", "one resource or route (default: all)")],
                "responses": _ok(
                    _object(
                        ["ready", "ready_to_stop_old_writes", "verdicts", "stop_old_writes"],
                        ready={"type": "boolean"},
                        ready_to_stop_old_writes={"type": "boolean"},
                        verdicts=_VERDICTS,
                        stop_old_writes=_VERDICTS,
                    ),
                    {404, *_GUARDED},
                ),
            }
        )
    },
    "/noise": {
        "get": _guarded(
            {
                "operationId": "noise_show",
                "summary": "the learned noise per route and field, with rates (this process's)",
                "parameters": [_query("route", "one route with a noise backend (default: all)")],
                "responses": _ok(
                    _object(
                        ["per_process", "routes"],
                        per_process={"type": "boolean"},
                        routes={"type": "object", "additionalProperties": {"type": "object"}},
                    ),
                    {404, *_GUARDED},
                ),
            }
        ),
        "delete": _guarded(
            {
                "operationId": "noise_reset",
                "summary": "forget the learned noise, of one route or all",
                "parameters": [_query("route", "one route with a noise backend (default: all)")],
                "responses": _ok(
                    _object(["reset"], reset={"type": "array", "items": {"type": "string"}}),
                    {404, *_GUARDED},
                ),
            }
        ),
    },
    "/": {
        "get": {
            "operationId": "triage",
            "summary": "the triage page (HTML); the records only with the token or a session",
            "parameters": [
                _query("route", "a route or resource this instance knows"),
                {
                    **_query("field", "a differing field and everything below it"),
                    "schema": {"type": "string", "maxLength": 200},
                },
                {**_limit(200, 20)},
            ],
            "responses": {
                "200": _html("the page"),
                "400": _html("an unknown parameter or a bad filter"),
            },
        }
    },
}

DESCRIPTION = (
    "The admin port of shadowproxy: metrics, health, mismatch records, live flags and "
    "readiness, and the triage page. Keep it off the public network. The form login of the "
    "triage page (`POST /login`, `POST /logout`) is for browsers and not described here. "
    "See docs/operations.md."
)


def admin_document() -> dict[str, Any]:
    return document(
        "shadowproxy admin API", DESCRIPTION, PATHS, {"securitySchemes": _SCHEMES, "schemas": {}}
    )
