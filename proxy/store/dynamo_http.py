"""A lean DynamoDB client: the JSON wire protocol over ``proxy.h1``, signed by
``proxy.store.sigv4``, retried as botocore's standard mode retries.

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
``orjson.loads``. The tests hold requests and answers to botocore's serializer and parser.

Where it connects (region, endpoint, FIPS, CA bundle) is decided before, once, by
``proxy.store.aws``; this client only parses the URL it is given (``None``: the region's own).

Failures (``proxy.store.dynamo_errors``): a DynamoDB error answer raises ``DynamoError``; a
connection that could not be made, broke, or gave an answer we could not read raises
``DynamoTransportError``; an attempt over ``read_timeout`` raises ``TimeoutError``. What
botocore's standard mode retries is retried — ``max_attempts`` calls in all, ``RetryPolicy``
backoff between — while the client's ``RetryQuota`` lasts: one quota for every call of the
client, so a dead endpoint gets a few retries, then only first attempts, not a multiple of
its traffic. Other errors are raised at once.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from typing import Any

import orjson

from proxy import h1
from proxy.store.aws import LOCAL_REGION, Endpoint, signing_region, tls_context
from proxy.store.base import retrying_unknown_writes
from proxy.store.dynamo_errors import (
    THROTTLING_CODES,
    DynamoError,
    DynamoTransportError,
    parse_error,
)
from proxy.store.retry import (
    NO_RETRY_INCREMENT,
    RETRY_COST,
    TIMEOUT_RETRY_COST,
    RetryPolicy,
    RetryQuota,
)
from proxy.store.sigv4 import (
    CONTENT_TYPE,
    TARGET_PREFIX,
    Credentials,
    SigV4Signer,
    amz_date,
    freeze,
)

WRITE_OPERATIONS = frozenset(
    {"PutItem", "DeleteItem", "UpdateItem", "BatchWriteItem", "TransactWriteItems"}
)


__all__ = [
    "CONTENT_TYPE",
    "TARGET_PREFIX",
    "DynamoError",
    "DynamoHttpClient",
    "DynamoTransportError",
    "Endpoint",
]

USER_AGENT = "shadowproxy"
EMULATOR_CREDENTIALS = ("test", "test")  # moto and DynamoDB Local accept any pair


class DynamoHttpClient:
    """One endpoint, one region, one keep-alive pool. ``open()``/``close()`` bracket its
    life; ``call`` is safe to use from many tasks at once (at most ``pool_limit`` requests
    in flight, the rest wait for a connection within their ``read_timeout``).

    ``connect_timeout`` bounds making a connection; ``read_timeout`` bounds one attempt as a
    whole (waiting for a connection, sending, reading the answer). ``retry`` supplies the
    backoff between attempts; ``max_attempts`` how many calls are made at most; ``quota``
    the retry tokens (botocore's numbers by default). ``use_fips`` picks the FIPS endpoint
    when ``endpoint_url`` is None; ``ca_bundle`` is what an https endpoint is verified with
    (default: the system's CAs).

    Credentials: ``access_key_id`` and ``secret_access_key`` when both are given; otherwise
    botocore's default chain (environment, ``profile`` or the default one, container and
    instance roles), refreshed as it says when they are temporary; with nothing found, a
    local endpoint (``endpoint_url``, or region ``local``: an emulator) gets a dummy pair
    and AWS itself is refused at ``open()``.
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
        max_waiting: int | None = None,
        deadline: float | None = None,
        retry: RetryPolicy | None = None,
        quota: RetryQuota | None = None,
        use_fips: bool = False,
        ca_bundle: str | None = None,
        profile: str | None = None,
    ) -> None:
        if (access_key_id is None) != (secret_access_key is None):
            raise ValueError("DynamoDB credentials: give both access key id and secret, or none")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts!r}")
        self.endpoint_url = endpoint_url
        self.region = region
        self.endpoint = Endpoint.parse(endpoint_url, region, use_fips)
        self.max_attempts = max_attempts
        self.retry = retry or RetryPolicy(max_attempts=max_attempts)  # 25 ms base, 2 s cap
        self.quota = quota or RetryQuota()
        self.ca_bundle = ca_bundle
        self.profile = profile
        self._explicit = (
            Credentials(access_key_id, secret_access_key, session_token)
            if access_key_id is not None and secret_access_key is not None
            else None
        )
        self._emulator = endpoint_url is not None or region == LOCAL_REGION
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self.throttles = 0
        """Throttling answers seen so far (retried or not): how a job knows to slow down."""
        self._pool_limit = pool_limit
        self._max_waiting = max_waiting
        self.deadline = deadline
        """Seconds one ``call`` may take, every attempt and backoff included (None: only
        ``max_attempts`` bounds it). A retry starts only if its backoff ends before."""
        self._signer = SigV4Signer(signing_region(region))
        self._credentials: Credentials | None = None
        self._refreshable: Any = None  # botocore credentials that renew themselves
        self._pool: h1.Pool | None = None

    async def open(self) -> None:
        if self._pool is not None:
            return
        await self._resolve_credentials()
        context = None
        if self.endpoint.scheme == "https":
            try:
                context = tls_context(self.ca_bundle)
            except (OSError, ssl.SSLError) as e:
                raise DynamoError(
                    "CABundleError", f"cannot load the CA bundle {self.ca_bundle!r}: {e}", 0
                ) from e
        self._pool = h1.Pool(
            self.endpoint.host,
            self.endpoint.port,
            limit=self._pool_limit,
            max_waiting=self._max_waiting,
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
        from aiobotocore.session import AioSession
        from botocore.exceptions import BotoCoreError

        try:
            found = await AioSession(profile=self.profile).get_credentials()
        except BotoCoreError as e:  # a broken profile, half the keys in the environment...
            raise DynamoError("CredentialsError", f"AWS credentials for DynamoDB: {e}", 0) from e
        if found is None:
            if not self._emulator:
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
        self._credentials = await freeze(found)

    async def _current_credentials(self) -> Credentials:
        if self._refreshable is not None:
            self._credentials = await freeze(self._refreshable)
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
        retry_unknown = operation not in WRITE_OPERATIONS or retrying_unknown_writes()
        loop = asyncio.get_running_loop()
        ends = None if self.deadline is None else loop.time() + self.deadline
        attempt = 0
        paid = 0  # what the latest retry cost: refunded when the call succeeds
        stale_retry = True
        throttled: DynamoError | None = None  # the latest throttling answer, if any
        while True:
            attempt += 1
            pause = self.retry.delay(attempt)  # before the next attempt, if one follows
            try:
                answer = await self._attempt(target, body, ends)
            except h1.PoolBusy as e:  # refused before sending: retrying would only queue
                raise self._transport_failure(operation, "Busy", e, attempt, retryable=False) from e
            except DynamoError as e:
                if e.code in THROTTLING_CODES:
                    self.throttles += 1
                    throttled = e
                if not e.retryable or not self._may_retry(attempt, RETRY_COST, pause, ends):
                    raise
                paid = RETRY_COST
            except h1.Disconnected as e:
                if e.reused and stale_retry:
                    # A kept-alive connection the server had closed while it sat idle: go
                    # again at once, on a new connection, without spending an attempt.
                    stale_retry = False
                    attempt -= 1
                    continue
                if not retry_unknown or not self._may_retry(attempt, RETRY_COST, pause, ends):
                    raise self._transport_failure(
                        operation, "Disconnected", e, attempt, True, pause, ends
                    ) from e
                paid = RETRY_COST
            except h1.ConnectFailed as e:
                cause = e.__cause__
                if isinstance(cause, ssl.SSLCertVerificationError):
                    raise self._untrusted(operation, cause) from e
                cost = TIMEOUT_RETRY_COST if isinstance(cause, TimeoutError) else RETRY_COST
                if not self._may_retry(attempt, cost, pause, ends):
                    raise self._transport_failure(
                        operation, "ConnectFailed", e, attempt, True, pause, ends
                    ) from e
                paid = cost
            except h1.PayloadError as e:
                if not retry_unknown or not self._may_retry(attempt, RETRY_COST, pause, ends):
                    raise self._transport_failure(
                        operation, "PayloadError", e, attempt, True, pause, ends
                    ) from e
                paid = RETRY_COST
            except h1.BackendError as e:  # ProtocolError: what came back is not HTTP
                raise self._transport_failure(
                    operation, "ProtocolError", e, attempt, retryable=False
                ) from e
            except TimeoutError as e:
                if throttled is not None and ends is not None and loop.time() >= ends:
                    # The call's deadline cut a retry of a throttled call short: what the
                    # caller should hear is the throttling (retry later), not a timeout.
                    raise throttled from e
                if not retry_unknown or not self._may_retry(
                    attempt, TIMEOUT_RETRY_COST, pause, ends
                ):
                    raise TimeoutError(
                        f"dynamodb {operation}: no answer within {self._read_timeout}s "
                        f"({self._attempts(attempt, True, pause, ends)})"
                    ) from e
                paid = TIMEOUT_RETRY_COST
            else:
                self.quota.release(paid or NO_RETRY_INCREMENT)
                return answer
            await asyncio.sleep(pause)

    def _may_retry(self, attempt: int, cost: int, pause: float, ends: float | None) -> bool:
        """Another attempt may follow ``attempt``: one is left, the backoff ``pause`` ends
        before the call's deadline ``ends``, and the quota pays ``cost``."""
        if attempt >= self.max_attempts:
            return False
        if ends is not None and asyncio.get_running_loop().time() + pause >= ends:
            return False
        return self.quota.acquire(cost)

    def _attempts(
        self, attempts: int, retryable: bool = True, pause: float = 0.0, ends: float | None = None
    ) -> str:
        if retryable and attempts < self.max_attempts:  # stopped early: which rule said so
            if ends is not None and asyncio.get_running_loop().time() + pause >= ends:
                return f"{attempts} attempts; the call's deadline of {self.deadline}s reached"
            return f"{attempts} attempts; retry quota exhausted"
        return f"{attempts} attempts"

    def _where(self) -> str:
        return f"{self.endpoint.scheme}://{self.endpoint.host_header}"

    def _transport_failure(
        self,
        operation: str,
        code: str,
        error: Exception,
        attempts: int,
        retryable: bool = True,
        pause: float = 0.0,
        ends: float | None = None,
    ) -> DynamoTransportError:
        tried = self._attempts(attempts, retryable, pause, ends)
        return DynamoTransportError(
            code, f"dynamodb {operation} at {self._where()}: {error} ({tried})", 0
        )

    def _untrusted(
        self, operation: str, error: ssl.SSLCertVerificationError
    ) -> DynamoTransportError:
        trusted = f"the CA bundle {self.ca_bundle!r}" if self.ca_bundle else "the system's CAs"
        return DynamoTransportError(
            "CertificateUntrusted",
            f"dynamodb {operation} at {self._where()}: the server's certificate does not "
            f"verify against {trusted} ({error.verify_message or error}); set the backend's "
            "ca_bundle, or AWS_CA_BUNDLE, to the CA bundle that signed it",
            0,
        )

    async def _attempt(self, target: str, body: bytes, ends: float | None) -> dict[str, Any]:
        pool = self._pool
        if pool is None:
            raise RuntimeError("DynamoHttpClient: open() was not awaited (or it is closed)")
        head = self._head(await self._current_credentials(), target, body)
        limit = asyncio.get_running_loop().time() + self._read_timeout
        deadline = limit if ends is None else min(limit, ends)
        # The deadline goes to each wait (a loop timer only when one waits), not an
        # ``asyncio.timeout`` around the attempt: that cost ~4% of a shadow read's CPU.
        response, _ = await h1.send(pool, "POST", head, body, deadline)
        try:
            data = await response.read(deadline)
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
