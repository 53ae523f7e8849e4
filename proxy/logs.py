"""Structured logs: JSON lines by default, readable text on a terminal — for every logger in
the process (ours, aiohttp's, asyncio's), since all of them go through the root handler set
up here.

Extra fields passed with ``extra={...}`` become top-level keys. Nothing secret reaches a line:
the values of ``Authorization``, ``Proxy-Authorization``, ``Cookie``, ``Set-Cookie`` and
``X-Admin-Token`` and any ``Bearer`` token are replaced wherever they appear (messages,
extras, tracebacks). Text lines escape control characters, so a client's ``%0d%0a`` cannot
forge a line. A request aiohttp's parser refuses is one short line, not a traceback, and at
most ``MALFORMED_BURST`` such lines are written in a row, then one per
``MALFORMED_EVERY_SECONDS`` with a count of those left out.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

import orjson
from aiohttp.http_exceptions import HttpProcessingError

_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
REDACTED = "[redacted]"
# A secret header's name, bare or quoted (a dict's repr, JSON), then the rest of its line.
_SECRET = re.compile(
    r"(?i)\b(proxy-authorization|authorization|set-cookie|cookie|x-admin-token)"
    r"([\"']?[ \t]*[:=][ \t]*[\"']?)[^\r\n]*"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)([ \t]+)[A-Za-z0-9._~+/=-]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_CONTROL_OR_NEWLINE = re.compile(r"[\x00-\x1f\x7f]")
MALFORMED_BURST = 10
MALFORMED_EVERY_SECONDS = 1.0


def scrub(text: str) -> str:
    """``text`` with secret header values and bearer tokens replaced."""
    if not text:
        return text
    text = _SECRET.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    return _BEARER.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)


def _escape(text: str, pattern: re.Pattern[str] = _CONTROL_OR_NEWLINE) -> str:
    return pattern.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: scrub(v) if isinstance(v, str) else v
        for k, v in vars(record).items()
        if k not in _STANDARD
    }


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        line.update(_extras(record))
        if record.exc_info and record.exc_info[0] is not None:
            line["error"] = scrub(self.formatException(record.exc_info))
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        extras = " ".join(f"{k}={_escape(str(v))}" for k, v in _extras(record).items())
        text = f"{stamp} {record.levelname:<7} {_escape(scrub(record.getMessage()))}"
        if extras:
            text += f"  {extras}"
        if record.exc_info and record.exc_info[0] is not None:
            trace = _escape(scrub(self.formatException(record.exc_info)), _CONTROL)
            text += "\n" + "\n".join("  | " + line for line in trace.splitlines())
        return text


class MalformedRequests(logging.Filter):
    """aiohttp's server logs every request its parser refuses with a traceback quoting the
    offending bytes: make that one line, and limit how many are written."""

    def __init__(self, *, clock: Any = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self._tokens = float(MALFORMED_BURST)
        self._last = clock()
        self._left_out = 0

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if record.name != "aiohttp.server" or not isinstance(error, HttpProcessingError):
            return True
        now = self._clock()
        self._tokens = min(
            float(MALFORMED_BURST), self._tokens + (now - self._last) / MALFORMED_EVERY_SECONDS
        )
        self._last = now
        if self._tokens < 1:
            self._left_out += 1
            return False
        self._tokens -= 1
        record.msg, record.args, record.exc_info = "malformed request refused", (), None
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.error = f"{type(error).__name__}: {_unquoted(str(error.message))}"
        if self._left_out:
            record.left_out = self._left_out
            self._left_out = 0
        return True


def _unquoted(message: str) -> str:
    """The parser's description without what it quotes after a colon (a header line, the
    target with its query or userinfo: any of it may be secret)."""
    return message.split("\n", 1)[0].split(":", 1)[0].strip()[:100]


def configure_logging(fmt: str = "auto", level: str = "INFO") -> None:
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TextFormatter() if fmt == "text" else JsonFormatter())
    handler.addFilter(MalformedRequests())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)  # other libraries: warnings and worse
    ours = logging.getLogger("shadowproxy")
    ours.handlers[:] = []
    ours.setLevel(level)
    ours.propagate = True
    # Refused requests are ours to report (one line each, rate-limited); aiohttp's own
    # access logger would duplicate our access log.
    logging.getLogger("aiohttp.server").setLevel(logging.INFO)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def safe_headers(headers: Any) -> dict[str, str]:
    """Headers fit for a log line: secrets replaced, long values cut."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        out[lower] = REDACTED if lower in SECRET_HEADERS else str(value)[:256]
    return out


class Throttle:
    """``ready()`` is true at most once per ``seconds``: for a failure that would otherwise
    be logged on every request or every round."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._last = float("-inf")

    def ready(self) -> bool:
        now = time.monotonic()
        if now - self._last < self._seconds:
            return False
        self._last = now
        return True
