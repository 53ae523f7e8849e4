"""What both OpenAPI documents share: the error envelope, responses, and ``GET /openapi.json``.

    doc = document("shadowproxy resource API", paths, components={"schemas": {...}})
    app.router.add_get(OPENAPI_PATH, openapi_handler(doc))

The resource API's document is generated from the resource schemas
(``proxy.resources.openapi``), the admin API's is written out once (``proxy.control.openapi``).
Every error either port answers uses one envelope (``proxy.errors.envelope``), described here
once as the ``Error`` schema.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from aiohttp import web

from proxy import __version__
from proxy.store.schema import RESERVED_PATH
from proxy.types import Handler

OPENAPI_VERSION = "3.1.0"
OPENAPI_PATH = RESERVED_PATH
ERROR_REF = "#/components/schemas/Error"

REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    303: "See Other",
    400: "Bad Request",
    401: "Unauthorized: no or a wrong admin token",
    403: "Forbidden: no admin token is configured, or a refused form",
    404: "Not Found",
    409: "Conflict",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable: the input does not match the schema",
    429: "Too Many Requests: over the requester's rate limit (with Retry-After)",
    500: "Internal error (a bug)",
    502: "Bad Gateway: the primary store failed",
    503: "Unavailable",
    504: "Gateway Timeout: the primary store did not answer in time",
}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The one error envelope of every port; `details` only when there are any.",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "request_id"],
            "additionalProperties": False,
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "request_id": {"type": "string"},
                "details": {"type": "array", "items": {"type": "object"}},
            },
        }
    },
}

REQUEST_ID_HEADER: dict[str, Any] = {
    "description": "the client's X-Request-ID, or a new one",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
}


def json_body(schema: Mapping[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error_responses(
    statuses: Iterable[int], *, headers: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The envelope under each status (every error of both ports is one)."""
    out = {}
    for status in sorted(statuses):
        response = json_body({"$ref": ERROR_REF}, REASONS[status])
        if headers:
            response["headers"] = dict(headers)
        out[str(status)] = response
    return out


def document(
    title: str, description: str, paths: Mapping[str, Any], components: Mapping[str, Any]
) -> dict[str, Any]:
    schemas = {"Error": ERROR_SCHEMA, **components.get("schemas", {})}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": __version__, "description": description},
        "paths": dict(paths),
        "components": {**components, "schemas": schemas},
    }


OPENAPI_OPERATION: dict[str, Any] = {
    "get": {
        "operationId": "openapi",
        "summary": "this document",
        "responses": {"200": json_body({"type": "object"}, "the OpenAPI 3.1 document")},
    }
}


def openapi_handler(doc: Mapping[str, Any]) -> Handler:
    """Serves ``doc``, rendered once."""
    body = orjson.dumps(doc)

    async def serve(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type="application/json")

    return serve
