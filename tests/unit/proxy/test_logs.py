"""Unit tests of ``proxy.logs``: scrubbing, the JSON and text formatters, the malformed-request
filter (one short line, rate-limited) and what ``configure_logging`` installs.

Everything is called directly (``formatter.format(record)``, ``filter.filter(record)``), not
through caplog, so what is asserted is exactly what would reach stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import sys
from collections.abc import Iterator
from types import TracebackType
from typing import Any
from unittest import mock

import pytest
from aiohttp.http_exceptions import (
    BadHttpMessage,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
)
from aiohttp.http_parser import HttpRequestParser

from proxy.logs import (
    MALFORMED_BURST,
    MALFORMED_EVERY_SECONDS,
    REDACTED,
    JsonFormatter,
    MalformedRequests,
    TextFormatter,
    configure_logging,
    scrub,
)

ExcInfo = tuple[type[BaseException], BaseException, TracebackType]


def exc_info_of(error: BaseException) -> ExcInfo:
    """``error`` raised and caught, so it carries a real traceback."""
    try:
        raise error
    except BaseException:
        info = sys.exc_info()
    assert info[0] is not None and info[1] is not None and info[2] is not None
    return info[0], info[1], info[2]


def record(
    msg: str = "hello",
    args: tuple[Any, ...] = (),
    *,
    name: str = "shadowproxy.test",
    level: int = logging.INFO,
    exc_info: ExcInfo | None = None,
    extra: dict[str, Any] | None = None,
) -> logging.LogRecord:
    rec = logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)
    for key, value in (extra or {}).items():
        setattr(rec, key, value)
    return rec


def server_error(error: HttpProcessingError) -> logging.LogRecord:
    """What aiohttp's server logs when its parser refuses a request."""
    return record(
        "Error handling request from %s",
        ("127.0.0.1",),
        name="aiohttp.server",
        level=logging.ERROR,
        exc_info=exc_info_of(error),
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- scrub -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc123", f"Authorization: {REDACTED}"),
        ("authorization: Basic dXNlcjpwYXNz", f"authorization: {REDACTED}"),
        ("AUTHORIZATION:Digest username=x", f"AUTHORIZATION:{REDACTED}"),
        ("Authorization : Bearer spaced", f"Authorization : {REDACTED}"),
        ("Authorization\t:  Bearer tabbed", f"Authorization\t:  {REDACTED}"),
        ("authorization=Bearer xyz", f"authorization={REDACTED}"),
        ("Proxy-Authorization: Basic Zm9vOmJhcg==", f"Proxy-Authorization: {REDACTED}"),
        ("proxy-authorization = Negotiate abc", f"proxy-authorization = {REDACTED}"),
        ("Cookie: session=s3cr3t; theme=dark", f"Cookie: {REDACTED}"),
        ("cookie=session=s3cr3t", f"cookie={REDACTED}"),
        ("Set-Cookie: sid=abc; Path=/; HttpOnly", f"Set-Cookie: {REDACTED}"),
        ("SET-COOKIE : sid=abc", f"SET-COOKIE : {REDACTED}"),
        ("X-Admin-Token: adm1n", f"X-Admin-Token: {REDACTED}"),
        ("x-admin-token = adm1n", f"x-admin-token = {REDACTED}"),
        ("X-ADMIN-TOKEN:adm1n", f"X-ADMIN-TOKEN:{REDACTED}"),
    ],
)
def test_scrub_replaces_secret_header_values(text: str, expected: str) -> None:
    assert scrub(text) == expected


def test_scrub_replaces_each_header_in_a_multi_line_dump_and_keeps_the_others() -> None:
    text = (
        "GET /x HTTP/1.1\r\nHost: example.com\r\nAuthorization: Bearer tok-1\r\n"
        "Accept: */*\r\nCookie: a=1; b=2\r\nX-Admin-Token: tok-2\r\nUser-Agent: curl\r\n"
    )
    out = scrub(text)
    for secret in ("tok-1", "a=1", "b=2", "tok-2"):
        assert secret not in out
    assert out == (
        f"GET /x HTTP/1.1\r\nHost: example.com\r\nAuthorization: {REDACTED}\r\n"
        f"Accept: */*\r\nCookie: {REDACTED}\r\nX-Admin-Token: {REDACTED}\r\nUser-Agent: curl\r\n"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sent Bearer eyJhbGciOi.eyJzdWIi.sig-_~+/= to the backend", "sent Bearer [r] to the"),
        ("bearer abc", "bearer [r]"),
        ("BEARER abc", "BEARER [r]"),
        ("using Basic dXNlcjpwYXNz==", "using Basic [r]"),
        ("token was (Bearer    abc) here", "token was (Bearer    [r]) here"),
    ],
)
def test_scrub_replaces_bearer_and_basic_tokens_anywhere(text: str, expected: str) -> None:
    out = scrub(text)
    assert out.startswith(expected.replace("[r]", REDACTED))
    assert "abc" not in out and "eyJ" not in out and "dXNl" not in out


@pytest.mark.parametrize(
    "text",
    [
        "",
        "request",
        "GET /users/42 200 in 3.1 ms",
        "Host: example.com\r\nAccept: */*\r\nContent-Type: application/json",
        "cookies: yes",  # another word, not the header
        "mycookie: 1",
        "authorized user 42",
        "x-admin: true",
        "token=abc",  # a query parameter, not a header: left to the sink's redaction
        "no secrets in {'a': 1, 'b': [2, 3]}",
    ],
)
def test_scrub_leaves_other_text_alone(text: str) -> None:
    assert scrub(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "headers {'Cookie': 'session=SECRET-Q1'}",
        'headers {"authorization": "Token SECRET-Q1"}',
        "headers {'X-Admin-Token': 'SECRET-Q1'}",
    ],
)
def test_scrub_replaces_values_of_quoted_header_names(text: str) -> None:
    assert "SECRET-Q1" not in scrub(text)


# --- JsonFormatter -------------------------------------------------------------------------


def test_json_line_has_the_fields_and_extras() -> None:
    rec = record(
        "user %s did %d things",
        ("ada", 3),
        name="shadowproxy.access",
        extra={"route": "users", "status": 200, "primary_ms": 1.5, "requester": None},
    )
    out = JsonFormatter().format(rec)
    assert "\n" not in out
    line = json.loads(out)
    assert line["level"] == "info"
    assert line["logger"] == "shadowproxy.access"
    assert line["msg"] == "user ada did 3 things"
    assert line["route"] == "users"
    assert line["status"] == 200
    assert line["primary_ms"] == 1.5
    assert line["requester"] is None
    assert line["ts"].endswith("Z") and "T" in line["ts"]
    assert "error" not in line
    assert not {"args", "msg_args", "exc_info", "pathname", "lineno"} & set(line)


def test_json_line_replaces_secrets_in_message_extras_and_traceback() -> None:
    error = ValueError("upstream said Authorization: Bearer TB-SECRET-1\nCookie: c=TB-SECRET-2")
    rec = record(
        "forwarding %s",
        ("Authorization: Basic MSG-SECRET-1",),
        level=logging.ERROR,
        exc_info=exc_info_of(error),
        extra={
            "note": "Cookie: session=EXTRA-SECRET-1",
            "token_hint": "used bearer EXTRA-SECRET-2",
            "admin": "X-Admin-Token=EXTRA-SECRET-3",
            "count": 7,
        },
    )
    out = JsonFormatter().format(rec)
    assert "\n" not in out
    for secret in ("MSG-SECRET-1", "EXTRA-SECRET", "TB-SECRET-1", "TB-SECRET-2"):
        assert secret not in out
    line = json.loads(out)
    assert line["msg"] == f"forwarding Authorization: {REDACTED}"
    assert line["note"] == f"Cookie: {REDACTED}"
    assert line["token_hint"] == f"used bearer {REDACTED}"
    assert line["admin"] == f"X-Admin-Token={REDACTED}"
    assert line["count"] == 7
    assert line["error"].startswith("Traceback (most recent call last):")
    assert "ValueError: upstream said Authorization: [redacted]" in line["error"]
    assert f"Cookie: {REDACTED}" in line["error"]


def test_json_line_stays_one_line_with_control_characters() -> None:
    rec = record("a\r\nFORGED\x00\x1b[31m", extra={"path": "/p\nFORGED"})
    out = JsonFormatter().format(rec)
    assert out.count("\n") == 0 and "\r" not in out
    line = json.loads(out)
    assert line["msg"] == "a\r\nFORGED\x00\x1b[31m"
    assert line["path"] == "/p\nFORGED"


def test_json_line_serialises_odd_extras_with_str() -> None:
    class Odd:
        def __str__(self) -> str:
            return "odd thing"

    line = json.loads(JsonFormatter().format(record(extra={"thing": Odd()})))
    assert line["thing"] == "odd thing"


# --- TextFormatter -------------------------------------------------------------------------


def test_text_line_escapes_control_characters_in_message_and_extras() -> None:
    rec = record(
        "GET %s",
        ("/x\r\nFORGED 12:00:00 INFO admin logged in",),
        extra={"path": "/p\r\nFORGED", "agent": "a\tb\x1b[2Jc\x7f", "n": 3},
    )
    out = TextFormatter().format(rec)
    assert "\n" not in out and "\r" not in out and "\x1b" not in out and "\x7f" not in out
    assert r"GET /x\x0d\x0aFORGED 12:00:00 INFO admin logged in" in out
    assert r"path=/p\x0d\x0aFORGED" in out
    assert r"agent=a\x09b\x1b[2Jc\x7f" in out
    assert "n=3" in out
    assert " INFO    GET " in out


def test_text_line_replaces_secrets_in_message_and_extras() -> None:
    rec = record(
        "got Authorization: Bearer T-SECRET-1",
        extra={"cookie_header": "Cookie: sid=T-SECRET-2", "why": "Basic T-SECRET-3"},
    )
    out = TextFormatter().format(rec)
    assert "T-SECRET" not in out
    assert f"got Authorization: {REDACTED}" in out
    assert f"cookie_header=Cookie: {REDACTED}" in out


def test_text_traceback_lines_are_indented_so_none_forges_a_line() -> None:
    error = RuntimeError(
        "bad\x1b[2J input\n12:00:00 INFO    FORGED line\r\nAuthorization: Bearer T-SECRET-4\x1b[0m"
    )
    rec = record("it failed", level=logging.ERROR, exc_info=exc_info_of(error))
    out = TextFormatter().format(rec)
    first, *rest = out.split("\n")
    assert first.endswith("ERROR   it failed")
    assert rest, "the traceback is there"
    assert all(line.startswith("  | ") for line in rest), rest
    assert rest[0] == "  | Traceback (most recent call last):"
    assert "  | 12:00:00 INFO    FORGED line\\x0d" in rest
    assert "T-SECRET-4" not in out
    assert "\r" not in out and "\x1b" not in out
    assert any(line == f"  | Authorization: {REDACTED}" for line in rest)


# --- MalformedRequests ---------------------------------------------------------------------


def test_bad_http_message_becomes_one_short_line() -> None:
    rec = server_error(
        BadHttpMessage(
            "Invalid header value char:\n\n  b'Authorization: Bearer SECRET-X\\x01'\n      ^"
        )
    )
    assert MalformedRequests(clock=FakeClock()).filter(rec) is True
    assert rec.getMessage() == "malformed request refused"
    assert rec.exc_info is None
    assert rec.levelno == logging.INFO and rec.levelname == "INFO"
    assert rec.error == "BadHttpMessage: Invalid header value char"  # type: ignore[attr-defined]
    assert not hasattr(rec, "left_out")
    for formatter in (JsonFormatter(), TextFormatter()):
        out = formatter.format(rec)
        assert "\n" not in out
        assert "malformed request refused" in out
        assert "SECRET-X" not in out and "Traceback" not in out


def test_line_too_long_error_leaves_out_the_quoted_bytes() -> None:
    line = b"Cookie: secretcookie" + b"A" * 9000
    rec = server_error(LineTooLong(line[:100] + b"...", 8190))
    assert MalformedRequests(clock=FakeClock()).filter(rec) is True
    error = rec.error  # type: ignore[attr-defined]
    assert error == "LineTooLong: Got more than 8190 bytes when reading"
    assert "secretcookie" not in error and "b'" not in error
    out = JsonFormatter().format(rec)
    assert "secretcookie" not in out
    assert json.loads(out)["msg"] == "malformed request refused"


def test_invalid_header_error_leaves_out_the_quoted_bytes() -> None:
    rec = server_error(InvalidHeader(b"Authorization : Bearer SECRET-Y"))
    assert MalformedRequests(clock=FakeClock()).filter(rec) is True
    assert rec.error == "InvalidHeader: Invalid HTTP header"  # type: ignore[attr-defined]


def test_error_is_the_first_line_before_a_colon_and_at_most_100_characters() -> None:
    rec = server_error(BadHttpMessage("x" * 500 + "\nsecond line SECRET-Z"))
    assert MalformedRequests(clock=FakeClock()).filter(rec) is True
    error = rec.error  # type: ignore[attr-defined]
    assert error == "BadHttpMessage: " + "x" * 100
    assert "SECRET-Z" not in error
    quoted = server_error(BadHttpMessage("Invalid target: http://u:SECRET-Y@/x"))
    assert MalformedRequests(clock=FakeClock()).filter(quoted) is True
    assert quoted.error == "BadHttpMessage: Invalid target"  # type: ignore[attr-defined]


def parser_error(data: bytes) -> HttpProcessingError:
    """What aiohttp's own (compiled, when available) request parser raises for ``data``."""
    parser = HttpRequestParser(
        mock.Mock(), asyncio.get_running_loop(), 2**16, max_line_size=8190, max_field_size=8190
    )
    try:
        parser.feed_data(data)
    except HttpProcessingError as e:
        return e
    raise AssertionError(f"the parser accepted {data!r}")


@pytest.mark.parametrize(
    "data",
    [
        b"GET /x HTTP/1.1\r\nAuthorization: Bearer SECRET-P1\x01\r\n\r\n",
        b"GET /x HTTP/1.1\r\nAuthorization : Bearer SECRET-P1\r\n\r\n",
        b"GET /x HTTP/1.1\r\nCookie: " + b"SECRET-P1" * 1000 + b"\r\n\r\n",
        b"GET /x HTTP/1.1\r\nCookie: a\x00SECRET-P1\r\n\r\n",
        b"GET /x?token=SECRET-P1\x01 HTTP/1.1\r\n\r\n",
        b"GE\x01T /x?token=SECRET-P1 HTTP/1.1\r\n\r\n",
        b"GET foo?token=SECRET-P1 HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
async def test_real_parser_errors_become_lines_without_the_request_bytes(data: bytes) -> None:
    rec = server_error(parser_error(data))
    assert MalformedRequests(clock=FakeClock()).filter(rec) is True
    assert rec.exc_info is None
    for formatter in (JsonFormatter(), TextFormatter()):
        out = formatter.format(rec)
        assert "\n" not in out and "SECRET-P1" not in out, out


@pytest.mark.parametrize(
    "data",
    [
        b"GET http://user:SECRET-P2@/x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http:///x?token=SECRET-P2 HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
async def test_invalid_url_error_leaves_out_the_request_target(data: bytes) -> None:
    error = parser_error(data)
    assert isinstance(error, InvalidURLError)
    rec = server_error(error)
    assert MalformedRequests(clock=FakeClock()).filter(rec) is True
    assert "SECRET-P2" not in JsonFormatter().format(rec)


def test_burst_then_one_per_interval_with_a_count_of_those_left_out() -> None:
    clock = FakeClock()
    limiter = MalformedRequests(clock=clock)
    error = BadHttpMessage("Invalid header token:\n\n  b'X'")
    passed = [limiter.filter(server_error(error)) for _ in range(MALFORMED_BURST)]
    assert passed == [True] * MALFORMED_BURST
    suppressed = [limiter.filter(server_error(error)) for _ in range(7)]
    assert suppressed == [False] * 7
    clock.advance(MALFORMED_EVERY_SECONDS / 2)
    assert limiter.filter(server_error(error)) is False  # half a token is not enough
    clock.advance(MALFORMED_EVERY_SECONDS / 2)
    rec = server_error(error)
    assert limiter.filter(rec) is True
    assert rec.left_out == 8  # type: ignore[attr-defined]
    assert json.loads(JsonFormatter().format(rec))["left_out"] == 8
    assert "left_out=8" in TextFormatter().format(rec)
    # the count starts again
    assert limiter.filter(server_error(error)) is False
    clock.advance(MALFORMED_EVERY_SECONDS)
    rec = server_error(error)
    assert limiter.filter(rec) is True
    assert rec.left_out == 1  # type: ignore[attr-defined]
    # nothing was left out since: no count
    clock.advance(MALFORMED_EVERY_SECONDS)
    rec = server_error(error)
    assert limiter.filter(rec) is True
    assert not hasattr(rec, "left_out")


def test_a_long_quiet_spell_refills_only_up_to_the_burst() -> None:
    clock = FakeClock()
    limiter = MalformedRequests(clock=clock)
    error = BadHttpMessage("bad")
    for _ in range(MALFORMED_BURST):
        assert limiter.filter(server_error(error))
    clock.advance(1000 * MALFORMED_EVERY_SECONDS)
    results = [limiter.filter(server_error(error)) for _ in range(MALFORMED_BURST + 5)]
    assert results == [True] * MALFORMED_BURST + [False] * 5


def test_a_steady_flood_writes_about_one_line_per_interval() -> None:
    clock = FakeClock()
    limiter = MalformedRequests(clock=clock)
    error = BadHttpMessage("bad")
    passed = 0
    for _ in range(1000):  # 100 per interval, for 10 intervals
        passed += limiter.filter(server_error(error))
        clock.advance(MALFORMED_EVERY_SECONDS / 100)
    assert MALFORMED_BURST + 9 <= passed <= MALFORMED_BURST + 10


@pytest.mark.parametrize(
    "rec",
    [
        # another logger, even with a parser error
        record(
            "Error handling request",
            name="aiohttp.access",
            level=logging.ERROR,
            exc_info=exc_info_of(BadHttpMessage("b'Cookie: x'")),
        ),
        record("oops", name="shadowproxy.proxy", exc_info=exc_info_of(LineTooLong(b"x", 8190))),
        # aiohttp.server, but no parser error
        record("Error handling request", name="aiohttp.server", level=logging.ERROR),
        record(
            "Unhandled exception",
            name="aiohttp.server",
            level=logging.ERROR,
            exc_info=exc_info_of(ValueError("boom")),
        ),
    ],
    ids=["other-logger-parser-error", "ours-parser-error", "server-no-exc", "server-other-exc"],
)
def test_other_records_pass_untouched(rec: logging.LogRecord) -> None:
    clock = FakeClock()
    limiter = MalformedRequests(clock=clock)
    before = dict(vars(rec))
    for _ in range(3 * MALFORMED_BURST):
        assert limiter.filter(rec) is True
    assert vars(rec) == before
    # and they used none of the burst
    for _ in range(MALFORMED_BURST):
        assert limiter.filter(server_error(BadHttpMessage("bad")))


# --- configure_logging ---------------------------------------------------------------------


@contextlib.contextmanager
def restored_logging() -> Iterator[None]:
    """configure_logging changes the root logger and a few named ones: put them back (within
    the test's call, so pytest's own capture handlers of other phases are not touched)."""
    names = ("", "shadowproxy", "aiohttp.server", "aiohttp.access")
    loggers = [logging.getLogger(n) for n in names]
    saved = [(logger, logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    try:
        yield
    finally:
        for logger, handlers, level, propagate in saved:
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate


def emit_sample_lines() -> None:
    logging.getLogger("shadowproxy.access").info(
        "request", extra={"path": "/a\r\nFORGED", "why": "Cookie: c=CFG-SECRET-1"}
    )
    logging.getLogger("some.library").info("library chatter is below the root's WARNING")
    logging.getLogger("some.library").warning("Authorization: Bearer CFG-SECRET-2")
    logging.getLogger("aiohttp.access").info("aiohttp's own access line is off")
    server = logging.getLogger("aiohttp.server")
    try:
        raise LineTooLong(b"Cookie: CFG-SECRET-3" + b"x" * 80 + b"...", 8190)
    except LineTooLong:
        server.exception("Error handling request from %s", "127.0.0.1")


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_configure_logging_routes_every_logger_through_the_safe_handler(
    fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    with restored_logging():
        configure_logging(fmt, "INFO")
        emit_sample_lines()
    out = stream.getvalue()
    lines = out.splitlines()
    assert len(lines) == 3, out
    assert "CFG-SECRET" not in out
    assert "chatter" not in out and "aiohttp's own" not in out
    if fmt == "json":
        parsed = [json.loads(line) for line in lines]
        assert [p["msg"] for p in parsed] == [
            "request",
            f"Authorization: {REDACTED}",
            "malformed request refused",
        ]
        assert parsed[0]["path"] == "/a\r\nFORGED"
        assert parsed[2]["logger"] == "aiohttp.server"
        assert parsed[2]["level"] == "info"
        assert parsed[2]["error"] == "LineTooLong: Got more than 8190 bytes when reading"
    else:
        assert r"path=/a\x0d\x0aFORGED" in lines[0]
        assert "WARNING" in lines[1]
        assert "malformed request refused" in lines[2]
        assert "error=LineTooLong: Got more than 8190 bytes when reading" in lines[2]


def test_configure_logging_auto_picks_text_on_a_terminal_and_json_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, kind in ((Tty(), TextFormatter), (io.StringIO(), JsonFormatter)):
        monkeypatch.setattr(sys, "stderr", stream)
        with restored_logging():
            configure_logging("auto", "INFO")
            (handler,) = logging.getLogger().handlers
        assert isinstance(handler.formatter, kind)
        assert any(isinstance(f, MalformedRequests) for f in handler.filters)
