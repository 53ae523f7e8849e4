"""The lean DynamoDB client without a network: SigV4 against botocore's own signer, error
bodies, endpoints, credentials and which failures are retried."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from proxy import h1
from proxy.store.aws import Endpoint
from proxy.store.dynamo_errors import DynamoError, DynamoTransportError, parse_error
from proxy.store.dynamo_http import DynamoHttpClient
from proxy.store.retry import RetryPolicy
from proxy.store.sigv4 import CONTENT_TYPE, TARGET_PREFIX, Credentials, SigV4Signer, amz_date

KEYS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
TEMPORARY = Credentials(KEYS.access_key_id, KEYS.secret_access_key, "FQoGZXIvYXdzE//token==")
BODY = b'{"TableName":"users","Key":{"id":{"S":"2f1b7e1c"}},"ConsistentRead":true}'


def botocore_authorization(
    monkeypatch: pytest.MonkeyPatch,
    credentials: Credentials,
    region: str,
    url: str,
    target: str,
    body: bytes,
    when: datetime,
) -> tuple[str, dict[str, str]]:
    """What botocore's SigV4Auth signs for the same request at ``when``."""
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: when.replace(tzinfo=None))
    request = AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": target},
    )
    boto = BotoCredentials(
        credentials.access_key_id, credentials.secret_access_key, credentials.session_token
    )
    SigV4Auth(boto, "dynamodb", region).add_auth(request)
    return request.headers["Authorization"], dict(request.headers.items())


@pytest.mark.parametrize("credentials", [KEYS, TEMPORARY], ids=["static", "session-token"])
@pytest.mark.parametrize(
    ("endpoint_url", "region"),
    [
        (None, "eu-west-1"),
        ("http://127.0.0.1:4566", "us-east-1"),
        ("https://dynamodb.example.test", "ap-southeast-2"),
    ],
)
def test_signature_is_botocores(
    monkeypatch: pytest.MonkeyPatch,
    credentials: Credentials,
    endpoint_url: str | None,
    region: str,
) -> None:
    endpoint = Endpoint.parse(endpoint_url, region)
    url = f"{endpoint.scheme}://{endpoint.host_header}/"
    when = datetime(2024, 5, 17, 23, 59, 58, tzinfo=UTC)
    target = TARGET_PREFIX + "GetItem"
    expected, headers = botocore_authorization(
        monkeypatch, credentials, region, url, target, BODY, when
    )
    timestamp = amz_date(when.timestamp())
    assert headers["X-Amz-Date"] == timestamp == "20240517T235958Z"
    signed = "content-type;host;x-amz-date;x-amz-target"
    if credentials.session_token:
        assert headers["X-Amz-Security-Token"] == credentials.session_token
        signed = "content-type;host;x-amz-date;x-amz-security-token;x-amz-target"
    assert f"SignedHeaders={signed}," in expected  # we compare like with like

    signer = SigV4Signer(region)
    ours = signer.authorization(credentials, timestamp, endpoint.host_header, target, BODY)
    assert ours == expected
    assert signer.authorization(credentials, timestamp, endpoint.host_header, target, BODY) == (
        expected  # again, from the cached signing key
    )


def test_a_wrong_request_gives_a_different_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison above can fail: any change to what is signed changes the header."""
    when = datetime(2024, 5, 17, 12, 0, 0, tzinfo=UTC)
    target = TARGET_PREFIX + "GetItem"
    url = "https://dynamodb.eu-west-1.amazonaws.com/"
    host = "dynamodb.eu-west-1.amazonaws.com"
    expected, _ = botocore_authorization(monkeypatch, KEYS, "eu-west-1", url, target, BODY, when)
    timestamp = amz_date(when.timestamp())
    signer = SigV4Signer("eu-west-1")
    assert signer.authorization(KEYS, timestamp, host, target, BODY) == expected
    other_secret = Credentials(KEYS.access_key_id, KEYS.secret_access_key + "x")
    variants = [
        signer.authorization(KEYS, timestamp, host, target, BODY + b" "),
        signer.authorization(KEYS, timestamp, host, TARGET_PREFIX + "PutItem", BODY),
        signer.authorization(KEYS, amz_date(when.timestamp() + 1), host, target, BODY),
        signer.authorization(other_secret, timestamp, host, target, BODY),
        SigV4Signer("eu-west-2").authorization(KEYS, timestamp, host, target, BODY),
    ]
    assert all(
        v.rsplit("Signature=", 1)[1] != expected.rsplit("Signature=", 1)[1] for v in variants
    )


def test_a_new_day_gets_a_new_signing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    signer = SigV4Signer("us-east-1")
    host = "dynamodb.us-east-1.amazonaws.com"
    url = f"https://{host}/"
    target = TARGET_PREFIX + "Query"
    for when in (
        datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(2025, 1, 1, 0, 0, 0, tzinfo=UTC),
        datetime(2025, 1, 1, 0, 0, 1, tzinfo=UTC),
    ):
        expected, _ = botocore_authorization(
            monkeypatch, KEYS, "us-east-1", url, target, BODY, when
        )
        ours = signer.authorization(KEYS, amz_date(when.timestamp()), host, target, BODY)
        assert ours == expected
    assert signer.signing_key(KEYS.secret_access_key, "20241231") != signer.signing_key(
        KEYS.secret_access_key, "20250101"
    )


def test_the_signing_key_is_derived_once_per_day(monkeypatch: pytest.MonkeyPatch) -> None:
    signer = SigV4Signer("us-east-1")
    derived: list[str] = []
    real = signer.signing_key

    def counting(secret: str, date: str) -> bytes:
        if (secret, date) not in signer._keys:
            derived.append(date)
        return real(secret, date)

    monkeypatch.setattr(signer, "signing_key", counting)
    for second in range(5):
        signer.authorization(KEYS, f"20240101T00000{second}Z", "h", TARGET_PREFIX + "X", BODY)
    signer.authorization(KEYS, "20240102T000000Z", "h", TARGET_PREFIX + "X", BODY)
    assert derived == ["20240101", "20240102"]


# error bodies -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "error_type", "code", "message"),
    [
        (
            400,
            b'{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",'
            b'"message":"The conditional request failed"}',
            None,
            "ConditionalCheckFailedException",
            "The conditional request failed",
        ),
        (
            400,
            b'{"__type":"com.amazon.coral.validate#ValidationException",'
            b'"Message":"Item size has exceeded the maximum allowed size"}',
            None,
            "ValidationException",
            "Item size has exceeded the maximum allowed size",
        ),
        (
            400,
            b'{"__type":"ResourceNotFoundException","message":"Requested resource not found"}',
            None,
            "ResourceNotFoundException",
            "Requested resource not found",
        ),
        (
            400,
            b'{"__type":"ThrottlingException"}',
            None,
            "ThrottlingException",
            "no message",
        ),
        (
            400,
            b"{}",
            "ProvisionedThroughputExceededException:http://internal.amazon.com/coral/x/",
            "ProvisionedThroughputExceededException",
            "no message",
        ),
        (503, b"", None, "503", "no message"),
        (502, b"<html>Bad Gateway</html>", None, "502", "<html>Bad Gateway</html>"),
        (500, b"[1, 2]", None, "500", "no message"),
    ],
)
def test_error_bodies(
    status: int, body: bytes, error_type: str | None, code: str, message: str
) -> None:
    error = parse_error(status, body, error_type)
    assert (error.code, error.message, error.status) == (code, message, status)
    assert code in str(error) and str(status) in str(error)


# endpoints --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "region", "expected"),
    [
        (None, "eu-west-1", ("https", "dynamodb.eu-west-1.amazonaws.com", 443, None)),
        ("http://127.0.0.1:8000", "x", ("http", "127.0.0.1", 8000, "127.0.0.1:8000")),
        ("http://localhost/", "x", ("http", "localhost", 80, "localhost")),
        ("http://localhost:80", "x", ("http", "localhost", 80, "localhost")),
        ("https://ddb.test:443", "x", ("https", "ddb.test", 443, "ddb.test")),
        ("https://ddb.test:8443", "x", ("https", "ddb.test", 8443, "ddb.test:8443")),
        ("http://[::1]:8000", "x", ("http", "::1", 8000, "[::1]:8000")),
    ],
)
def test_endpoints(url: str | None, region: str, expected: tuple[Any, ...]) -> None:
    endpoint = Endpoint.parse(url, region)
    scheme, host, port, header = expected
    assert (endpoint.scheme, endpoint.host, endpoint.port) == (scheme, host, port)
    assert endpoint.host_header == (header or host)


@pytest.mark.parametrize(
    "url", ["ftp://x", "localhost:8000", "http://x/prefix", "http://x:99999", "http://x/?a=1"]
)
def test_bad_endpoints_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="DynamoDB endpoint"):
        Endpoint.parse(url, "us-east-1")


# credentials ------------------------------------------------------------------------------


def client(endpoint_url: str | None = "http://127.0.0.1:1", **kwargs: Any) -> DynamoHttpClient:
    options: dict[str, Any] = {
        "access_key_id": None,
        "secret_access_key": None,
        "connect_timeout": 1.0,
        "read_timeout": 1.0,
        "max_attempts": 3,
        "retry": RetryPolicy(max_attempts=3, base_delay=0.0),
    }
    options.update(kwargs)
    return DynamoHttpClient(endpoint_url, "us-east-1", **options)


@pytest.fixture
def no_ambient_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """botocore's chain finds nothing: no env keys, no files, no instance metadata."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


async def test_explicit_keys_win(
    no_ambient_credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "FROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "envsecret")
    c = client(access_key_id="AKID", secret_access_key="secret", session_token="tok")
    async with c:
        assert await c._current_credentials() == Credentials("AKID", "secret", "tok")


async def test_the_default_chain_is_asked_without_keys(
    no_ambient_credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "FROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "envsecret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "envtoken")
    c = client(endpoint_url=None)
    async with c:
        assert await c._current_credentials() == Credentials("FROMENV", "envsecret", "envtoken")


async def test_an_emulator_without_credentials_gets_dummies(no_ambient_credentials: None) -> None:
    c = client()
    async with c:
        assert await c._current_credentials() == Credentials("test", "test")


async def test_aws_without_credentials_is_refused(no_ambient_credentials: None) -> None:
    with pytest.raises(DynamoError, match="no AWS credentials") as raised:
        await client(endpoint_url=None).open()
    assert raised.value.code == "NoCredentials"


def test_half_a_key_pair_is_refused() -> None:
    with pytest.raises(ValueError, match="both"):
        client(access_key_id="AKID")


async def test_refreshable_credentials_are_refrozen_per_call() -> None:
    class Frozen:
        def __init__(self, n: int) -> None:
            self.access_key, self.secret_key, self.token = f"AK{n}", "s", f"t{n}"

    class Rotating:
        n = 0

        def refresh_needed(self) -> bool:
            return True

        async def get_frozen_credentials(self) -> Frozen:
            self.n += 1
            return Frozen(self.n)

    c = client()
    c._refreshable = Rotating()
    assert (await c._current_credentials()).access_key_id == "AK1"
    assert (await c._current_credentials()).session_token == "t2"


# retries ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (DynamoError("ProvisionedThroughputExceededException", "m", 400), True),
        (DynamoError("ThrottlingException", "m", 400), True),
        (DynamoError("RequestLimitExceeded", "m", 400), True),
        (DynamoError("InternalServerError", "m", 500), True),
        (DynamoError("ServiceUnavailable", "m", 503), True),
        (DynamoError("502", "bad gateway", 502), True),
        (DynamoError("TransactionConflictException", "m", 400), False),
        (DynamoError("ConditionalCheckFailedException", "m", 400), False),
        (DynamoError("ResourceNotFoundException", "m", 400), False),
        (DynamoError("ValidationException", "m", 400), False),
        (DynamoTransportError("CRC32Mismatch", "m", 200), True),
        (DynamoTransportError("ProtocolError", "m", 0), False),
        (h1.ConnectFailed("refused"), True),
        (h1.Disconnected("closed"), True),
        (h1.PayloadError("cut"), True),
        (h1.ProtocolError("garbage"), False),
        (TimeoutError(), True),
    ],
    ids=lambda v: str(v) if isinstance(v, bool) else getattr(v, "code", type(v).__name__),
)
async def test_which_failures_are_retried(error: Exception, retried: bool) -> None:
    c = client(max_attempts=3)
    calls = scripted(c, [error, error, error])
    expected: type[Exception] = type(error)
    if isinstance(error, h1.BackendError):
        expected = DynamoTransportError
    with pytest.raises(expected) as raised:
        await c.call("GetItem", {})
    assert len(calls) == (3 if retried else 1)
    if isinstance(error, h1.BackendError):
        assert isinstance(raised.value, DynamoTransportError)
        assert raised.value.code == type(error).__name__
        assert f"({len(calls)} attempts)" in raised.value.message


async def test_a_retried_call_returns_the_first_answer() -> None:
    c = client(max_attempts=4)
    calls = scripted(
        c, [DynamoError("ThrottlingException", "m", 400), h1.ConnectFailed("x"), {"Item": {}}]
    )
    assert await c.call("GetItem", {"TableName": "t"}) == {"Item": {}}
    assert len(calls) == 3


async def test_a_stale_kept_alive_connection_costs_no_attempt() -> None:
    stale = h1.Disconnected("closed while idle")
    stale.reused = True
    c = client(max_attempts=1)
    calls = scripted(c, [stale, {"ok": True}])
    assert await c.call("GetItem", {}) == {"ok": True}
    assert len(calls) == 2
    again = h1.Disconnected("closed while idle")
    again.reused = True
    calls = scripted(c, [again, again])  # once per call, not forever
    with pytest.raises(DynamoTransportError, match="Disconnected"):
        await c.call("GetItem", {})
    assert len(calls) == 2


async def test_timeouts_say_what_timed_out() -> None:
    c = client(max_attempts=2, read_timeout=0.25)
    scripted(c, [TimeoutError(), TimeoutError()])
    with pytest.raises(TimeoutError, match=r"GetItem: no answer within 0.25s \(2 attempts\)"):
        await c.call("GetItem", {})


async def test_backoff_between_attempts_follows_the_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    class Counting(RetryPolicy):
        def delay(self, retry: int, rand: Callable[[], float] = lambda: 1.0) -> float:
            return float(retry)

    monkeypatch.setattr("proxy.store.dynamo_http.asyncio.sleep", sleep)
    c = client(max_attempts=3, retry=Counting())
    scripted(c, [h1.ConnectFailed("x")] * 3)
    with pytest.raises(DynamoTransportError):
        await c.call("GetItem", {})
    assert slept == [1.0, 2.0]


async def test_operation_names_cannot_inject_headers() -> None:
    with pytest.raises(ValueError, match="operation"):
        await client().call("GetItem\r\nX-Evil: 1", {})


def test_request_head_is_signed_http() -> None:
    c = client(endpoint_url="http://127.0.0.1:8000")
    body = b"{}"
    before = time.time()
    head = c._head(TEMPORARY, TARGET_PREFIX + "GetItem", body).decode()
    lines = head.split("\r\n")
    assert lines[0] == "POST / HTTP/1.1"
    assert head.endswith("\r\n\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:-2])
    assert fields["Host"] == "127.0.0.1:8000"
    assert fields["Content-Type"] == CONTENT_TYPE
    assert fields["X-Amz-Target"] == "DynamoDB_20120810.GetItem"
    assert fields["X-Amz-Security-Token"] == TEMPORARY.session_token
    assert fields["User-Agent"] == "shadowproxy"
    assert fields["Content-Length"] == "2"
    assert fields["X-Amz-Date"] in {amz_date(before), amz_date(time.time())}
    assert fields["Authorization"] == SigV4Signer("us-east-1").authorization(
        TEMPORARY, fields["X-Amz-Date"], "127.0.0.1:8000", TARGET_PREFIX + "GetItem", body
    )


def scripted(c: DynamoHttpClient, script: list[Any]) -> list[bytes]:
    """Replace the client's network attempt: each call plays the next entry (raise an
    exception, return a dict). Returns the list of bodies sent."""
    sent: list[bytes] = []
    steps = iter(script)

    async def attempt(target: str, body: bytes, ends: float | None) -> dict[str, Any]:
        sent.append(body)
        step = next(steps)
        if isinstance(step, BaseException):
            raise step
        answer: dict[str, Any] = step
        return answer

    c._attempt = attempt  # type: ignore[method-assign]
    return sent


class EveryTenth(RetryPolicy):
    """A backoff of exactly 0.1 s before every retry."""

    def delay(self, retry: int, rand: Callable[[], float] = lambda: 0.0) -> float:
        return 0.1


async def test_retries_stop_before_a_backoff_would_pass_the_deadline() -> None:
    throttled = DynamoError("ProvisionedThroughputExceededException", "slow down", 400)
    c = client(max_attempts=10, retry=EveryTenth(max_attempts=10), deadline=0.25)
    calls = scripted(c, [throttled] * 10)
    with pytest.raises(DynamoError) as raised:
        await c.call("GetItem", {})
    assert raised.value.code == "ProvisionedThroughputExceededException"
    assert 2 <= len(calls) <= 3  # attempts at ~0 s, 0.1 s, 0.2 s; a fourth would start at 0.3
    assert c.throttles == len(calls)


async def test_without_a_deadline_every_attempt_is_made() -> None:
    throttled = DynamoError("ThrottlingException", "slow down", 400)
    c = client(max_attempts=10, retry=RetryPolicy(max_attempts=10, base_delay=0.0))
    calls = scripted(c, [throttled] * 10)
    with pytest.raises(DynamoError):
        await c.call("GetItem", {})
    assert len(calls) == 10


async def test_a_transport_failure_says_the_deadline_stopped_it() -> None:
    c = client(max_attempts=10, retry=EveryTenth(max_attempts=10), deadline=0.15)
    scripted(c, [h1.ConnectFailed("refused")] * 10)
    with pytest.raises(DynamoTransportError) as raised:
        await c.call("GetItem", {})
    assert "the call's deadline of 0.15s reached" in raised.value.message


async def test_a_busy_pool_is_not_retried() -> None:
    c = client(max_attempts=5)
    calls = scripted(c, [h1.PoolBusy("all in use")] * 5)
    with pytest.raises(DynamoTransportError) as raised:
        await c.call("GetItem", {})
    assert raised.value.code == "Busy" and len(calls) == 1
