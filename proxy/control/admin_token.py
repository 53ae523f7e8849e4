"""The admin token and the one way to check it, for the JSON endpoints and the triage page.

A request proves it knows the token with ``Authorization: Bearer <token>`` or
``X-Admin-Token: <token>``; where the endpoint names a cookie (the triage page), with a
session made at login instead::

    auth = AdminToken(env.get("SHADOWPROXY_ADMIN_TOKEN"))
    problem = auth.request_problem(request, cookie="shadowproxy_session")  # None: let it in
    value, max_age = auth.session()                                          # after a login

A session is ``<expiry>.<HMAC-SHA256(token, expiry)>``: not the token itself, so a cookie
cannot be replayed as a bearer token against the JSON API, and it stops working at its
expiry or when the token changes. Every comparison is constant-time. With no token
configured every check fails (closed, not open).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable

from aiohttp import web

from proxy.errors import HTTPProblem

SESSION_SECONDS = 8 * 3600
_SESSION_PURPOSE = b"shadowproxy admin session|"


class Unauthorized(HTTPProblem):
    status, code = 401, "unauthorized"


class Forbidden(HTTPProblem):
    status, code = 403, "forbidden"


def header_token(request: web.BaseRequest) -> str | None:
    """The token a request gives in a header (``Authorization: Bearer`` wins), or None."""
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("X-Admin-Token")


class AdminToken:
    def __init__(self, token: str | None, *, clock: Callable[[], float] = time.time) -> None:
        self._expected = token.encode() if token else None
        self._clock = clock

    @property
    def configured(self) -> bool:
        return self._expected is not None

    def problem(self, given: str) -> HTTPProblem | None:
        """None when ``given`` is the token; else why not (403 none configured, 401 wrong)."""
        if self._expected is None:
            return Forbidden("admin endpoints are disabled: no admin token is configured")
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self._expected):
            return Unauthorized("missing or wrong admin token")
        return None

    def request_problem(
        self, request: web.BaseRequest, *, cookie: str | None = None
    ) -> HTTPProblem | None:
        """A header token is checked first; without one, the session in ``cookie`` (when the
        endpoint names one and the request has it)."""
        given = header_token(request)
        if given is None and cookie is not None and cookie in request.cookies:
            if self._expected is None:
                return self.problem("")
            if self.session_valid(request.cookies[cookie]):
                return None
            return Unauthorized("the admin session has expired or is not valid: log in again")
        return self.problem(given or "")

    def session(self) -> tuple[str, int]:
        """A new session value and its lifetime in seconds; only with a token configured."""
        if self._expected is None:
            raise ValueError("no admin token is configured: there are no sessions")
        expires = str(int(self._clock()) + SESSION_SECONDS)
        return f"{expires}.{_mac(self._expected, expires)}", SESSION_SECONDS

    def session_valid(self, value: str) -> bool:
        expires, sep, mac = value.partition(".")
        if self._expected is None or not sep or not expires.isdigit():
            return False
        expected = _mac(self._expected, expires).encode()
        if not hmac.compare_digest(mac.encode("utf-8", "surrogateescape"), expected):
            return False
        return int(expires) > self._clock()

    def key(self, purpose: bytes) -> bytes | None:
        """A key of its own for ``purpose`` (the page's CSRF tokens), derived from the token so
        every worker and instance sharing the token agrees; None without a token."""
        if self._expected is None:
            return None
        return hmac.new(self._expected, b"shadowproxy key|" + purpose, hashlib.sha256).digest()


def _mac(key: bytes, expires: str) -> str:
    return hmac.new(key, _SESSION_PURPOSE + expires.encode(), hashlib.sha256).hexdigest()
