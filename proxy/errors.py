"""The project's one error tree, and the one JSON envelope every error response uses.

Every error shadowproxy raises on purpose is a ``ShadowProxyError`` (defined in
``comparators.errors``, re-exported here). Each subtree lives with the code that raises it::

ShadowProxyError
├── ComparatorError        comparators.errors: a bad comparison rule (RuleError)
├── ConfigError            here: bad configuration, names the key path and the bad value
├── SchemaError            proxy.store.schema: a request body or key that breaks the
│                          resource schema (422); also a ValueError
├── InvalidField           proxy.store.fieldtypes: one value that breaks its field type
├── StoreError             proxy.store.base: a store could not do what was asked
│   ├── RecordNotFound, KeyConflict, LimitExceeded, InvalidCursor, InvalidRecord
│   └── StoreUnavailable   (StoreTimeout, Throttled, RequestCut)
├── DynamoError            proxy.store.dynamo_errors: an error answer of the DynamoDB API,
│                          translated into a StoreError by the store (DynamoTransportError)
├── BackendError           proxy.h1: an HTTP backend failed (ConnectFailed, Disconnected,
│                          PayloadError, ProtocolError); answered as 502/504
├── FlagError              proxy.flags.model: a flag change refused (UnknownFlag,
│                          InvalidFlagValue, UnsafeFlip); also a ValueError
├── FlagStoreError         proxy.flags.store: the flag store failed (FlagStoreUnavailable,
│                          FlagConflict)
├── RepairRace             proxy.repair.repairer: a record kept changing during a repair
├── VerifyResultsError     proxy.readiness.verify_results: verify results unreadable or
│                          malformed (the gate reports it as unknown); also a ValueError
├── AdminError             proxy.cli_admin: the admin API refused or could not be reached
└── HTTPProblem            here: an error answered to a client, with status and code
    ├── BadRequest         400  malformed request (bad JSON, wrong types, unknown fields,
    │                           an ambiguous path)
    ├── NotFound           404
    ├── MethodNotAllowed   405
    ├── Conflict           409
    ├── PayloadTooLarge    413
    ├── UnsupportedMedia   415
    ├── ExpectationFailed  417  an ``Expect`` other than ``100-continue``
    ├── Unprocessable      422
    ├── TooManyRequests    429  over a requester's rate limit (proxy.ratelimit), with
    │                           ``Retry-After``
    ├── BadGateway         502  the primary failed or answered garbage
    ├── Unavailable        503  a backend down, throttling or at its concurrency limit (with
    │                           ``Retry-After``; also: the rate-limit store is down under
    │                           fail_closed)
    ├── GatewayTimeout     504  the primary did not answer in time
    └── Unauthorized 401, Forbidden 403   proxy.control.admin_token: the admin token

``python -m pytest tests/unit/proxy/test_errors.py`` checks that every exception class
defined in the project descends from ``ShadowProxyError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import orjson
from aiohttp import web

from comparators.errors import ShadowProxyError


class ConfigError(ShadowProxyError):
    """A configuration value is wrong; the message names the key path and the value."""


class HTTPProblem(ShadowProxyError):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(
        self, message: str, *, details: Any = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers  # sent with the envelope, e.g. a 429's ``Retry-After``


class BadRequest(HTTPProblem):
    status, code = 400, "bad_request"


class NotFound(HTTPProblem):
    status, code = 404, "not_found"


class MethodNotAllowed(HTTPProblem):
    status, code = 405, "method_not_allowed"


class Conflict(HTTPProblem):
    status, code = 409, "conflict"


class PayloadTooLarge(HTTPProblem):
    status, code = 413, "payload_too_large"


class UnsupportedMedia(HTTPProblem):
    status, code = 415, "unsupported_media_type"


class ExpectationFailed(HTTPProblem):
    status, code = 417, "expectation_failed"


class Unprocessable(HTTPProblem):
    status, code = 422, "unprocessable"


class TooManyRequests(HTTPProblem):
    status, code = 429, "rate_limited"


class BadGateway(HTTPProblem):
    status, code = 502, "bad_gateway"


class Unavailable(HTTPProblem):
    status, code = 503, "unavailable"


# Sent with a 503 that a retry may soon cure: a store throttling, a backend at its limit.
RETRY_SOON: Mapping[str, str] = MappingProxyType({"Retry-After": "1"})


class GatewayTimeout(HTTPProblem):
    status, code = 504, "gateway_timeout"


def envelope(
    status: int, code: str, message: str, request_id: str, details: Any = None
) -> web.Response:
    body = {"error": {"code": code, "message": message, "request_id": request_id}}
    if details is not None:
        body["error"]["details"] = details
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers={"X-Request-ID": request_id},
    )


def problem_response(problem: HTTPProblem, request_id: str) -> web.Response:
    response = envelope(problem.status, problem.code, problem.message, request_id, problem.details)
    if problem.headers:
        response.headers.update(problem.headers)
    return response
