"""A lean DynamoDB client: the JSON wire protocol over ``proxy.h1``, signed here.

    client = DynamoHttpClient(None, "eu-west-1", access_key_id=None, secret_access_key=None,
                              connect_timeout=2, read_timeout=5, max_attempts=3)
    await client.open()                  # resolves credentials, makes the connection pool
    item = await client.call("GetItem", {"TableName": "users", "Key": {"id": {"S": "1"}}})
    await client.close()

Why not aioboto3/botocore: one GetItem through them cost 1.5-4 ms of CPU in our process
(model-driven serialisation, SigV4 through event hooks, aiohttp, response parsing), which made
shadow reads too dear. DynamoDB's protocol is uniform: every operation is ``POST /`` with
``X-Amz-Target: DynamoDB_20120810.<Operation>``, a SigV4 signature and a JSON body that is the
low-level request dict itself (PascalCase keys, AttributeValues such as ``{"S": "x"}``; binary
values as base64 text); the answer is the same JSON botocore returns, minus
``ResponseMetadata``. So a call is one ``orjson.dumps``, two hashes and two HMACs for the
signature (the signing key is cached per day), one pooled keep-alive request and one
``orjson.loads``.

Failures: a DynamoDB error answer raises ``DynamoError`` (``code`` is the ``__type`` after
``#``, e.g. ``ConditionalCheckFailedException``); a connection that could not be made, broke,
or gave an answer we could not read raises ``DynamoTransportError`` (``status`` 0); an attempt
over ``read_timeout`` raises ``TimeoutError``. Throttling codes, 5xx answers, connection
failures, CRC32 mismatches and timeouts are retried — ``max_attempts`` calls in all, with
``RetryPolicy`` backoff between — like botocore's "standard" retry mode; other errors are
raised at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ssl
import time
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from proxy import h1
from proxy.store.retry import RetryPolicy

SERVICE = "dynamodb"
TARGET_PREFIX = "DynamoDB_20120810."
CONTENT_TYPE = "application/x-amz-json-1.0"
USER_AGENT = "shadowproxy"
ALGORITHM = "AWS4-HMAC-SHA256"
EMULATOR_CREDENTIALS = ("test", "test")  # moto and DynamoDB Local accept any pair

# Retried like botocore's "standard" mode does for DynamoDB (throttles and transient
# server-side faults); TransactionConflictException is the caller's business.
RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
    }
)
# DynamoTransportError codes that mean the endpoint could not be reached or dropped us.
CONNECTION_CODES = frozenset({"ConnectFailed", "Disconnected", "PayloadError"})


class DynamoError(Exception):
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
        return self.code in RETRYABLE_CODES or self.status >= 500


class DynamoTransportError(DynamoError):
    """No usable answer: connection refused, closed, broken off, unparseable, or a CRC32
    mismatch. ``code`` says which (``ConnectFailed``, ``Disconnected``, ``PayloadError``,
    ``ProtocolError``, ``CRC32Mismatch``); ``status`` is 0, or the status of a bad answer."""

    @property
    def retryable(self) -> bool:
        return self.code != "ProtocolError"


def parse_error(status: int, body: bytes, error_type: str | None = None) -> DynamoError:
    """The ``DynamoError`` of a non-200 answer.

    The code is the body's ``__type`` after its ``#`` (``com.amazonaws...#Code``, or just
    ``Code``), else the ``x-amzn-ErrorType`` header's (``Code:http://...``), else the status
    as text (botocore's fallback too); the message is ``message`` or ``Message``, else the
    start of a body that is not JSON (a proxy's or load balancer's error page)."""
    data: Any = None
    if body:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
    fields: dict[str, Any] = data if isinstance(data, dict) else {}
    raw_code = fields.get("__type")
    if not isinstance(raw_code, str) or not raw_code:
        raw_code = error_type.split(":", 1)[0] if error_type else ""
    code = raw_code.rsplit("#", 1)[-1] or str(status)
    message = fields.get("message", fields.get("Message"))
    if not isinstance(message, str) or not message:
        text = body[:200].decode("utf-8", "replace").strip() if data is None else ""
        message = text or "no message"
    return DynamoError(code, message, status)


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __post_init__(self) -> None:
        for value in (self.access_key_id, self.secret_access_key, self.session_token or ""):
            if "\r" in value or "\n" in value:
                raise ValueError("AWS credentials must not contain line breaks")


_last_stamp: tuple[int, str] = (-1, "")


def amz_date(now: float) -> str:
    """SigV4's timestamp, ``20240101T120000Z``, for a Unix time (formatted once a second)."""
    global _last_stamp
    second = int(now)
    if _last_stamp[0] != second:
        _last_stamp = (second, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second)))
    return _last_stamp[1]


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.digest(key, text.encode(), "sha256")


class SigV4Signer:
    """SigV4 for DynamoDB's ``POST /`` requests, in one region.

    The signing key (four chained HMACs) depends only on the secret, the date and the region,
    so it is derived once per day and secret and cached: a request then costs two SHA-256s
    and two HMACs. The signed headers are content-type, host, x-amz-date, x-amz-target and,
    with temporary credentials, x-amz-security-token; the payload hash covers the body."""

    def __init__(self, region: str, service: str = SERVICE) -> None:
        self.region = region
        self.service = service
        self._keys: dict[tuple[str, str], bytes] = {}

    def signing_key(self, secret: str, date: str) -> bytes:
        key = self._keys.get((secret, date))
        if key is None:
            key = _hmac(("AWS4" + secret).encode(), date)
            for part in (self.region, self.service, "aws4_request"):
                key = _hmac(key, part)
            if len(self._keys) >= 4:  # yesterday's key, or a rotated secret's: not needed
                self._keys.clear()
            self._keys[(secret, date)] = key
        return key

    def authorization(
        self, credentials: Credentials, timestamp: str, host: str, target: str, body: bytes
    ) -> str:
        """The ``Authorization`` header for one request; ``timestamp`` is its X-Amz-Date."""
        date = timestamp[:8]
        headers = [("content-type", CONTENT_TYPE), ("host", host), ("x-amz-date", timestamp)]
        if credentials.session_token:
            headers.append(("x-amz-security-token", credentials.session_token))
        headers.append(("x-amz-target", target))  # the names stay sorted, as SigV4 wants
        signed = ";".join(name for name, _ in headers)
        canonical = "POST\n/\n\n{}\n{}\n{}".format(
            "".join(f"{name}:{' '.join(value.split())}\n" for name, value in headers),
            signed,
            hashlib.sha256(body).hexdigest(),
        )
        scope = f"{date}/{self.region}/{self.service}/aws4_request"
        to_sign = "\n".join(
            (ALGORITHM, timestamp, scope, hashlib.sha256(canonical.encode()).hexdigest())
        )
        key = self.signing_key(credentials.secret_access_key, date)
        signature = hmac.digest(key, to_sign.encode(), "sha256").hex()  # one-shot: no HMAC object
        return (
            f"{ALGORITHM} Credential={credentials.access_key_id}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )


@dataclass(frozen=True, slots=True)
class Endpoint:
    scheme: str
    host: str
    port: int
    host_header: str  # with the port only when it is not the scheme's default

    @classmethod
    def parse(cls, endpoint_url: str | None, region: str) -> Endpoint:
        url = endpoint_url or f"https://dynamodb.{region}.amazonaws.com"
        split = urlsplit(url)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise ValueError(f"DynamoDB endpoint {url!r}: expected http(s)://host[:port]")
        if split.path not in ("", "/") or split.query or split.fragment:
            raise ValueError(f"DynamoDB endpoint {url!r}: a path or query is not supported")
        default = 443 if split.scheme == "https" else 80
        try:
            port = split.port or default
        except ValueError as e:
            raise ValueError(f"DynamoDB endpoint {url!r}: {e}") from e
        host = split.hostname
        shown = f"[{host}]" if ":" in host else host
        header = shown if port == default else f"{shown}:{port}"
        return cls(split.scheme, host, port, header)


class DynamoHttpClient:
    """One endpoint, one region, one keep-alive pool. ``open()``/``close()`` bracket its
    life; ``call`` is safe to use from many tasks at once (at most ``pool_limit`` requests
    in flight, the rest wait for a connection within their ``read_timeout``).

    ``connect_timeout`` bounds making a connection; ``read_timeout`` bounds one attempt as a
    whole (waiting for a connection, sending, reading the answer). ``retry`` supplies the
    backoff between attempts; ``max_attempts`` how many calls are made at most.

    Credentials: ``access_key_id`` and ``secret_access_key`` when both are given; otherwise
    botocore's default chain (environment, profiles, container and instance roles), refreshed
    as it says when they are temporary; with nothing found, a local ``endpoint_url`` (an
    emulator) gets a dummy pair and AWS itself is refused at ``open()``.
    """

    def __init__(
        self,
        endpoint_url: str | None,
        region: str,
        *,
        access_key_id: str | None,
        secret_access_key: str | None,
        session_token: str | None = None,
        connect_timeout: float,
        read_timeout: float,
        max_attempts: int,
        pool_limit: int = 64,
        retry: RetryPolicy | None = None,
    ) -> None:
        if (access_key_id is None) != (secret_access_key is None):
            raise ValueError("DynamoDB credentials: give both access key id and secret, or none")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts!r}")
        self.endpoint_url = endpoint_url
        self.region = region
        self.endpoint = Endpoint.parse(endpoint_url, region)
        self.max_attempts = max_attempts
        self.retry = retry or RetryPolicy(max_attempts=max_attempts)  # 25 ms base, 2 s cap
        self._explicit = (
            Credentials(access_key_id, secret_access_key, session_token)
            if access_key_id is not None and secret_access_key is not None
            else None
        )
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._pool_limit = pool_limit
        self._signer = SigV4Signer(region)
        self._credentials: Credentials | None = None
        self._refreshable: Any = None  # botocore credentials that renew themselves
        self._pool: h1.Pool | None = None

    async def open(self) -> None:
        if self._pool is not None:
            return
        await self._resolve_credentials()
        context = ssl.create_default_context() if self.endpoint.scheme == "https" else None
        self._pool = h1.Pool(
            self.endpoint.host,
            self.endpoint.port,
            limit=self._pool_limit,
            connect_timeout=self._connect_timeout,
            ssl=context,
        )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    async def __aenter__(self) -> DynamoHttpClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # credentials -------------------------------------------------------------------------

    async def _resolve_credentials(self) -> None:
        if self._explicit is not None:
            self._credentials = self._explicit
            return
        # The default chain is botocore's; imported here so the hot path never loads it.
        from aiobotocore.session import get_session
        from botocore.exceptions import BotoCoreError

        try:
            found = await get_session().get_credentials()
        except BotoCoreError as e:  # a broken profile, half the keys in the environment...
            raise DynamoError("CredentialsError", f"AWS credentials for DynamoDB: {e}", 0) from e
        if found is None:
            if self.endpoint_url is None:
                raise DynamoError(
                    "NoCredentials",
                    f"no AWS credentials for DynamoDB in {self.region}: none given and none "
                    "found by the default chain (environment, profile, container or instance "
                    "role)",
                    0,
                )
            self._credentials = Credentials(*EMULATOR_CREDENTIALS)
            return
        if callable(getattr(found, "refresh_needed", None)):
            self._refreshable = found
        self._credentials = await _frozen(found)

    async def _current_credentials(self) -> Credentials:
        if self._refreshable is not None:
            self._credentials = await _frozen(self._refreshable)
        if self._credentials is None:
            raise RuntimeError("DynamoHttpClient: open() was not awaited")
        return self._credentials

    # calls -------------------------------------------------------------------------------

    async def call(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        """Run one DynamoDB operation (``"GetItem"``) and return its response dict."""
        if not operation.isalnum():
            raise ValueError(f"not a DynamoDB operation name: {operation!r}")
        target = TARGET_PREFIX + operation
        body = orjson.dumps(request)
        attempt = 0
        stale_retry = True
        while True:
            attempt += 1
            try:
                return await self._attempt(target, body)
            except DynamoError as e:
                if not e.retryable or attempt >= self.max_attempts:
                    raise
            except h1.Disconnected as e:
                if e.reused and stale_retry:
                    # A kept-alive connection the server had closed while it sat idle: go
                    # again at once, on a new connection, without spending an attempt.
                    stale_retry = False
                    attempt -= 1
                    continue
                if attempt >= self.max_attempts:
                    raise self._transport_failure(operation, "Disconnected", e, attempt) from e
            except h1.ConnectFailed as e:
                if attempt >= self.max_attempts:
                    raise self._transport_failure(operation, "ConnectFailed", e, attempt) from e
            except h1.PayloadError as e:
                if attempt >= self.max_attempts:
                    raise self._transport_failure(operation, "PayloadError", e, attempt) from e
            except h1.BackendError as e:  # ProtocolError: what came back is not HTTP
                raise self._transport_failure(operation, "ProtocolError", e, attempt) from e
            except TimeoutError as e:
                if attempt >= self.max_attempts:
                    raise TimeoutError(
                        f"dynamodb {operation}: no answer within {self._read_timeout}s "
                        f"({attempt} attempts)"
                    ) from e
            await asyncio.sleep(self.retry.delay(attempt))

    def _transport_failure(
        self, operation: str, code: str, error: Exception, attempts: int
    ) -> DynamoTransportError:
        where = f"{self.endpoint.scheme}://{self.endpoint.host_header}"
        return DynamoTransportError(
            code, f"dynamodb {operation} at {where}: {error} ({attempts} attempts)", 0
        )

    async def _attempt(self, target: str, body: bytes) -> dict[str, Any]:
        pool = self._pool
        if pool is None:
            raise RuntimeError("DynamoHttpClient: open() was not awaited (or it is closed)")
        head = self._head(await self._current_credentials(), target, body)
        async with asyncio.timeout(self._read_timeout):
            response, _ = await h1.send(pool, "POST", head, body)
            try:
                data = await response.read()
            finally:
                response.release()
        crc = response.header(b"x-amz-crc32")
        if crc is not None and (not crc.isdigit() or int(crc) != zlib.crc32(data)):
            raise DynamoTransportError(
                "CRC32Mismatch",
                f"{target}: the body's CRC32 is {zlib.crc32(data)}, its x-amz-crc32 header "
                f"says {crc.decode('latin-1')!r} (corrupted in transit)",
                response.status,
            )
        if response.status != 200:
            error_type = response.header(b"x-amzn-errortype")
            raise parse_error(
                response.status, data, error_type.decode("latin-1") if error_type else None
            )
        if not data:
            return {}
        try:
            answer = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise DynamoTransportError(
                "ProtocolError", f"{target}: the answer is not JSON: {e}", response.status
            ) from e
        if not isinstance(answer, dict):
            raise DynamoTransportError(
                "ProtocolError", f"{target}: the answer is not a JSON object", response.status
            )
        return answer

    def _head(self, credentials: Credentials, target: str, body: bytes) -> bytes:
        timestamp = amz_date(time.time())
        host = self.endpoint.host_header
        authorization = self._signer.authorization(credentials, timestamp, host, target, body)
        token = credentials.session_token
        return (
            f"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: {CONTENT_TYPE}\r\n"
            f"X-Amz-Target: {target}\r\nX-Amz-Date: {timestamp}\r\n"
            + (f"X-Amz-Security-Token: {token}\r\n" if token else "")
            + f"Authorization: {authorization}\r\nUser-Agent: {USER_AGENT}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()


async def _frozen(credentials: Any) -> Credentials:
    """aiobotocore credentials -> ours (refreshing them first when they are due)."""
    frozen = await credentials.get_frozen_credentials()
    return Credentials(frozen.access_key, frozen.secret_key, frozen.token or None)
