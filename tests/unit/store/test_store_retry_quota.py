"""Which failures the lean DynamoDB client retries and how its retry quota drains and refills,
held to botocore's standard retry mode: its code lists and quota numbers, and its own
``StandardRetryConditions`` and ``RetryQuotaChecker`` run on the same failures."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import botocore.session
import pytest
from botocore.awsrequest import AWSResponse, HeadersDict
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from botocore.retries import quota as botocore_quota
from botocore.retries.standard import (
    RetryContext,
    RetryQuotaChecker,
    StandardRetryConditions,
    ThrottledRetryableChecker,
    TransientRetryableChecker,
)

from proxy import h1
from proxy.store import retry
from proxy.store.dynamo_errors import (
    MODELED_RETRYABLE_CODES,
    RETRYABLE_CODES,
    SERVER_CODES,
    THROTTLING_CODES,
    TRANSIENT_CODES,
    TRANSIENT_STATUSES,
    DynamoError,
    DynamoTransportError,
    translate,
)
from proxy.store.dynamo_http import DynamoHttpClient
from proxy.store.retry import RetryPolicy, RetryQuota

MODEL = botocore.session.get_session().get_service_model("dynamodb")
OPERATION = MODEL.operation_model("GetItem")
MAX_ATTEMPTS = 3


def modeled_errors() -> set[str]:
    return {s.name for op in MODEL.operation_names for s in MODEL.operation_model(op).error_shapes}


def operation_for(code: str | None) -> Any:
    """An operation of the model that lists the error (its retryable trait is per operation),
    else GetItem."""
    for name in MODEL.operation_names:
        operation = MODEL.operation_model(name)
        if any(shape.name == code for shape in operation.error_shapes):
            return operation
    return OPERATION


def botocore_retries(code: str | None, status: int, exception: Exception | None = None) -> bool:
    """Whether botocore's standard mode retries a first attempt that ended so."""
    response = None if exception else AWSResponse("https://x", status, HeadersDict(), None)
    parsed = {"Error": {"Code": code, "Message": ""}} if code is not None else None
    context = RetryContext(
        attempt_number=1,
        operation_model=operation_for(code),
        parsed_response=parsed,
        http_response=response,
        caught_exception=exception,
    )
    return bool(StandardRetryConditions(max_attempts=MAX_ATTEMPTS).is_retryable(context))


# the lists and numbers -------------------------------------------------------------------


def test_our_codes_include_botocores_standard_mode_codes() -> None:
    assert set(ThrottledRetryableChecker._THROTTLED_ERROR_CODES) == THROTTLING_CODES
    assert set(TransientRetryableChecker._TRANSIENT_ERROR_CODES) == TRANSIENT_CODES
    assert set(TransientRetryableChecker._TRANSIENT_STATUS_CODES) == TRANSIENT_STATUSES
    modeled = {
        s.name
        for op in MODEL.operation_names
        for s in MODEL.operation_model(op).error_shapes
        if s.metadata.get("retryable") is not None
    }
    assert modeled == MODELED_RETRYABLE_CODES
    assert THROTTLING_CODES | TRANSIENT_CODES | modeled <= RETRYABLE_CODES


def test_the_quota_numbers_are_botocores() -> None:
    assert retry.INITIAL_RETRY_TOKENS == botocore_quota.RetryQuota.INITIAL_CAPACITY == 500
    assert retry.RETRY_COST == RetryQuotaChecker._RETRY_COST == 5
    assert retry.TIMEOUT_RETRY_COST == RetryQuotaChecker._TIMEOUT_RETRY_REQUEST == 10
    assert retry.NO_RETRY_INCREMENT == RetryQuotaChecker._NO_RETRY_INCREMENT == 1
    assert RetryQuota().available == RetryQuota().capacity == 500


# which answers are retried ---------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    sorted(THROTTLING_CODES | TRANSIENT_CODES | modeled_errors() - SERVER_CODES),
)
def test_error_codes_are_retried_as_botocore_retries_them(code: str) -> None:
    assert DynamoError(code, "m", 400).retryable == botocore_retries(code, 400)


@pytest.mark.parametrize("status", [400, 403, 413, 429, 500, 501, 502, 503, 504, 505, 599])
def test_statuses_are_retried_as_botocore_retries_them(status: int) -> None:
    code = str(status)  # an answer without __type: the status is the code, in both
    assert DynamoError(code, "m", status).retryable == botocore_retries(code, status)


def test_dynamodb_server_faults_are_retried_in_both() -> None:
    for code, status in (("InternalServerError", 500), ("ServiceUnavailable", 503)):
        assert DynamoError(code, "m", status).retryable
        assert botocore_retries(code, status)


def test_codes_neither_retries() -> None:
    """The oracle can say no: these are errors of the request, not of the moment."""
    for code in (
        "ConditionalCheckFailedException",
        "ValidationException",
        "TransactionConflictException",
        "ResourceNotFoundException",
        "AccessDeniedException",
    ):
        assert not botocore_retries(code, 400)
        assert not DynamoError(code, "m", 400).retryable


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (h1.ConnectFailed("refused"), EndpointConnectionError(endpoint_url="https://x")),
        (h1.Disconnected("closed"), ConnectionClosedError(endpoint_url="https://x")),
        (TimeoutError(), ReadTimeoutError(endpoint_url="https://x")),
    ],
    ids=["connect", "disconnected", "timeout"],
)
async def test_connection_failures_are_retried_as_botocore_retries_them(
    ours: Exception, theirs: Exception
) -> None:
    assert botocore_retries(None, 0, theirs)
    c, attempts = scripted_client(RetryQuota())
    attempts.append([ours] * MAX_ATTEMPTS)
    with pytest.raises((DynamoTransportError, TimeoutError)):
        await c.call("GetItem", {})
    assert attempts == [[]]  # all three played


@pytest.mark.parametrize(
    "code", ["TransactionInProgressException", "RequestTimeout", "LimitExceededException"]
)
def test_a_retryable_code_is_throttled_for_the_store(code: str) -> None:
    assert type(translate(DynamoError(code, "m", 400))).__name__ == "Throttled"


# the quota, against botocore's own checker ------------------------------------------------

OUTCOMES = ("ok", "throttle", "503", "timeout", "refused", "connect-timeout")


def ours_for(outcome: str) -> Any:
    if outcome == "ok":
        return {}
    if outcome == "throttle":
        return DynamoError("ThrottlingException", "slow down", 400)
    if outcome == "503":
        return DynamoError("503", "busy", 503)
    if outcome == "timeout":
        return TimeoutError()
    error = h1.ConnectFailed(outcome)
    if outcome == "connect-timeout":
        error.__cause__ = TimeoutError()
    return error


def botocore_context(outcome: str, attempt: int, request_context: dict[str, Any]) -> RetryContext:
    exception: Exception | None = {
        "timeout": ReadTimeoutError(endpoint_url="https://x"),
        "refused": EndpointConnectionError(endpoint_url="https://x"),
        "connect-timeout": ConnectTimeoutError(endpoint_url="https://x"),
    }.get(outcome)
    status = {"throttle": 400, "503": 503}.get(outcome, 0)
    code = {"throttle": "ThrottlingException", "503": "503"}.get(outcome)
    return RetryContext(
        attempt_number=attempt,
        operation_model=OPERATION,
        parsed_response={"Error": {"Code": code, "Message": ""}} if code else None,
        http_response=None if exception else AWSResponse("https://x", status, HeadersDict(), None),
        caught_exception=exception,
        request_context=request_context,
    )


def botocore_run(calls: list[list[str]]) -> list[tuple[int, int]]:
    """(attempts made, quota left) after each call, by botocore's standard-mode pieces."""
    checker = RetryQuotaChecker(botocore_quota.RetryQuota())
    conditions = StandardRetryConditions(max_attempts=MAX_ATTEMPTS)
    results = []
    for outcomes in calls:
        request_context: dict[str, Any] = {}
        attempts = 0
        for outcome in outcomes:
            attempts += 1
            if outcome == "ok":
                ok = AWSResponse("https://x", 200, HeadersDict(), None)
                checker.release_retry_quota(request_context, ok)
                break
            context = botocore_context(outcome, attempts, request_context)
            if not conditions.is_retryable(context) or not checker.acquire_retry_quota(context):
                break
        results.append((attempts, checker._quota.available_capacity))
    return results


def scripted_client(quota: RetryQuota) -> tuple[DynamoHttpClient, list[list[Any]]]:
    """A client whose network attempts play, per call, the next list of outcomes."""
    c = DynamoHttpClient(
        "http://127.0.0.1:1",
        "us-east-1",
        access_key_id="a",
        secret_access_key="s",
        connect_timeout=1,
        read_timeout=1,
        max_attempts=MAX_ATTEMPTS,
        retry=RetryPolicy(max_attempts=MAX_ATTEMPTS, base_delay=0.0),
        quota=quota,
    )
    calls: list[list[Any]] = []

    async def attempt(target: str, body: bytes, ends: float | None) -> dict[str, Any]:
        step = calls[0].pop(0)
        if isinstance(step, BaseException):
            raise step
        answer: dict[str, Any] = step
        return answer

    c._attempt = attempt  # type: ignore[method-assign]
    return c, calls


async def ours_run(calls: list[list[str]]) -> list[tuple[int, int]]:
    quota = RetryQuota()
    c, script = scripted_client(quota)
    results = []
    for outcomes in calls:
        script[:] = [[ours_for(o) for o in outcomes]]
        with contextlib.suppress(DynamoError, TimeoutError):
            await c.call("GetItem", {})
        results.append((len(outcomes) - len(script[0]), quota.available))
    return results


async def test_a_dead_endpoint_drains_the_quota_as_in_botocore() -> None:
    calls = [["refused"] * MAX_ATTEMPTS] * 60 + [["ok"]] * 20 + [["refused"] * MAX_ATTEMPTS] * 5
    theirs = botocore_run(calls)
    assert await ours_run(calls) == theirs
    assert theirs[49] == (3, 0) and theirs[50] == (1, 0)  # 50 calls of 2 retries, then none
    assert theirs[79] == (1, 20)  # each first-time success refunded one token


async def test_timeouts_cost_twice_as_in_botocore() -> None:
    calls = [["timeout", "ok"], ["connect-timeout", "connect-timeout", "ok"], ["503", "ok"]]
    theirs = botocore_run(calls)
    assert await ours_run(calls) == theirs
    # 500 - 10 + 10 (refund of the last retry), - 20 + 10, - 5 + 5
    assert theirs == [(2, 500), (3, 490), (2, 490)]


async def test_random_failures_drain_and_refill_as_in_botocore() -> None:
    rand = random.Random(20240517)
    weights = (0.3, 0.2, 0.1, 0.15, 0.15, 0.1)
    calls = [rand.choices(OUTCOMES, weights, k=MAX_ATTEMPTS) for _ in range(600)]
    theirs = botocore_run(calls)
    assert await ours_run(calls) == theirs
    assert min(left for _, left in theirs) < 100  # the quota did run low in this script


async def test_an_empty_quota_surfaces_the_first_failure() -> None:
    c, calls = scripted_client(RetryQuota(capacity=0))
    calls.append([DynamoError("ThrottlingException", "m", 400), {}])
    with pytest.raises(DynamoError, match="ThrottlingException"):
        await c.call("GetItem", {})
    assert len(calls[0]) == 1  # not retried
    calls[:] = [[h1.ConnectFailed("refused"), {}]]
    with pytest.raises(DynamoTransportError, match=r"\(1 attempts; retry quota exhausted\)"):
        await c.call("GetItem", {})
    calls[:] = [[TimeoutError(), {}]]
    with pytest.raises(TimeoutError, match=r"\(1 attempts; retry quota exhausted\)"):
        await c.call("GetItem", {})


async def test_the_quota_is_the_clients_shared_by_its_calls() -> None:
    one, one_calls = scripted_client(RetryQuota())
    two, _ = scripted_client(RetryQuota())
    for _ in range(3):
        one_calls[:] = [[h1.ConnectFailed("refused")] * MAX_ATTEMPTS]
        with pytest.raises(DynamoTransportError):
            await one.call("GetItem", {})
    assert (one.quota.available, two.quota.available) == (470, 500)
    default = DynamoHttpClient(
        None,
        "eu-west-1",
        access_key_id=None,
        secret_access_key=None,
        connect_timeout=1,
        read_timeout=1,
        max_attempts=3,
    )
    assert default.quota is not one.quota and default.quota.available == 500


def test_the_quota_never_exceeds_its_capacity() -> None:
    quota = RetryQuota(capacity=12)
    assert quota.acquire(10) and not quota.acquire(5) and quota.available == 2
    quota.release(5)
    quota.release(100)
    assert quota.available == 12
    assert not RetryQuota(capacity=0).acquire(1)
    with pytest.raises(ValueError, match="negative"):
        RetryQuota(capacity=-1)
