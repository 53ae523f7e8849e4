"""What a DynamoDB call's failure is: the error answer or the missing answer, whether the
client tries again, and what the store reports for it.

Retried, as botocore's standard retry mode retries for DynamoDB (the tests read botocore's
lists): its throttling codes, its transient codes, the codes DynamoDB's service model marks
retryable, HTTP 500/502/503/504, connections that fail or break, timeouts and CRC32
mismatches. Not retried although botocore would: a certificate that does not verify (no
retry can fix it; it fails at once with what to configure) and an answer that is not HTTP.
``TransactionConflictException`` is the caller's business, as in botocore.

For the store, a retryable code is ``Throttled`` (its batch calls back off and go again), a
missing table or an unreachable endpoint ``StoreUnavailable``, a timeout ``StoreTimeout``.
"""

from __future__ import annotations

from typing import Any

import orjson

from comparators.errors import ShadowProxyError
from proxy.store.base import (
    LimitExceeded,
    RequestCut,
    StoreBusy,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
    Throttled,
)

# botocore.retries.standard.ThrottledRetryableChecker._THROTTLED_ERROR_CODES
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
# botocore.retries.standard.TransientRetryableChecker._TRANSIENT_ERROR_CODES
TRANSIENT_CODES = frozenset(
    {"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete"}
)
# Error shapes of DynamoDB's service model with the ``retryable`` trait.
MODELED_RETRYABLE_CODES = frozenset({"ReplicatedWriteConflictException"})
# DynamoDB's own server-side faults, by name (they come with a 500 or 503 anyway).
SERVER_CODES = frozenset({"InternalServerError", "ServiceUnavailable"})
RETRYABLE_CODES = THROTTLING_CODES | TRANSIENT_CODES | MODELED_RETRYABLE_CODES | SERVER_CODES
# TransientRetryableChecker._TRANSIENT_STATUS_CODES
TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})
# DynamoTransportError codes that mean the endpoint could not be reached (or trusted) or
# dropped us.
CONNECTION_CODES = frozenset(
    {"ConnectFailed", "Disconnected", "PayloadError", "CertificateUntrusted"}
)
CUT_CODES = frozenset({"Disconnected", "PayloadError"})  # after the request went out


class DynamoError(ShadowProxyError):
    """An error answer from DynamoDB (or, as ``DynamoTransportError``, no usable answer).

    ``code`` is the short error name (``ResourceNotFoundException``), ``status`` the HTTP
    status (0 when there was no answer)."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(f"{code} (HTTP {status}): {message}" if status else f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE_CODES or self.status in TRANSIENT_STATUSES


class DynamoTransportError(DynamoError):
    """No usable answer: connection refused, closed, broken off, unparseable, a certificate
    that does not verify, or a CRC32 mismatch. ``code`` says which (``ConnectFailed``,
    ``Disconnected``, ``PayloadError``, ``ProtocolError``, ``CertificateUntrusted``,
    ``CRC32Mismatch``, ``Busy``: every connection in use and too many calls waiting);
    ``status`` is 0, or the status of a bad answer."""

    @property
    def retryable(self) -> bool:
        return self.code not in ("ProtocolError", "CertificateUntrusted", "Busy")


def parse_error(status: int, body: bytes, error_type: str | None = None) -> DynamoError:
    """The ``DynamoError`` of a non-200 answer.

    The code is the body's ``__type`` without what follows a ``:`` and up to its last ``#``
    (``com.amazonaws...#Code``, or just ``Code``: botocore's reading), else the
    ``x-amzn-ErrorType`` header's (``Code:http://...``), else the status as text (botocore's
    fallback too); the message is ``message`` or ``Message``, else the start of a body that
    is not JSON (a proxy's or load balancer's error page)."""
    data: Any = None
    if body:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
    fields: dict[str, Any] = data if isinstance(data, dict) else {}
    raw_code = fields.get("__type")
    if not isinstance(raw_code, str) or not raw_code:
        raw_code = error_type or ""
    code = raw_code.split(":", 1)[0].rsplit("#", 1)[-1] or str(status)
    message = fields.get("message", fields.get("Message"))
    if not isinstance(message, str) or not message:
        text = body[:200].decode("utf-8", "replace").strip() if data is None else ""
        message = text or "no message"
    return DynamoError(code, message, status)


def translate(error: Exception) -> StoreError:
    """Client errors -> the store error tree (the DynamoError stays as ``__cause__``)."""
    if isinstance(error, TimeoutError):
        return StoreTimeout(f"dynamodb: {error}")
    if isinstance(error, DynamoTransportError):
        if error.code == "Busy":
            return StoreBusy(f"dynamodb: {error.message}")
        if error.code in CUT_CODES:
            return RequestCut(f"dynamodb: {error.code}: {error.message}")
        if error.code in CONNECTION_CODES:
            return StoreUnavailable(f"dynamodb: {error.code}: {error.message}")
        return StoreError(f"dynamodb: {error.code}: {error.message}")
    if isinstance(error, DynamoError):
        code = error.code
        message = f"dynamodb: {code}: {error.message}"
        if code in RETRYABLE_CODES:
            return Throttled(message)
        if code == "ResourceNotFoundException":
            return StoreUnavailable(message)
        if code == "ItemCollectionSizeLimitExceededException" or (
            code == "ValidationException" and "size" in message.lower()
        ):
            return LimitExceeded(message)
        return StoreError(message)
    if isinstance(error, OSError):
        return StoreUnavailable(f"dynamodb: {type(error).__name__}: {error}")
    return StoreError(f"dynamodb: {type(error).__name__}: {error}")


def error_code(error: StoreError) -> str:
    """The DynamoDB error code behind a translated error ("" for transport failures)."""
    cause = error.__cause__
    if isinstance(cause, DynamoError) and not isinstance(cause, DynamoTransportError):
        return cause.code
    return ""
