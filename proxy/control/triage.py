"""The triage page on the admin port: ``GET /``, ``POST /login``, ``POST /logout``.

``GET /`` shows anyone who reaches the port the summary: the flags of every resource and
route, the readiness verdicts and the comparison counters. The mismatch records and their
side-by-side diffs (filtered server-side: ``?route=&field=&limit=``) are rendered only for a
request that carries the admin token in a header or the session cookie a login sets
(``proxy.control.admin_token``); without it they are left out of the HTML, not hidden.

Why it is safe to open in a browser:

- the login form posts the token once; the cookie holds a session derived from it
  (HttpOnly, SameSite=Strict, Path=/, Secure on a TLS listener), never the token, and no
  page ever renders the token;
- login and logout are POSTs checked against a signed double-submit CSRF token (a cookie
  and a hidden field that must be equal and carry an HMAC keyed from the admin token), and
  refused when the browser says the form came from another site (``Sec-Fetch-Site``);
- Jinja2 autoescapes every value; the page has no JavaScript, and its Content-Security-
  Policy allows no script at all and only the one inline stylesheet with this response's
  nonce;
- bad input (an unknown filter, a form over 4 KiB, a body that is not a form) gets a 4xx
  page; a verdict or a sink that cannot be read becomes a message on the page.
"""

from __future__ import annotations

import hmac
import logging
import math
import secrets
import time
from dataclasses import dataclass
from hashlib import sha256
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from jinja2 import Environment, PackageLoader, StrictUndefined
from prometheus_client import CollectorRegistry

from proxy.control import triage_data as data
from proxy.control.admin_token import AdminToken, Forbidden, header_token
from proxy.control.flags_api import FlagsAdmin
from proxy.errors import BadRequest, HTTPProblem, UnsupportedMedia
from proxy.experiment.shadow import ShadowRunner
from proxy.experiment.sinks import BufferedSink
from proxy.request import read_capped, request_id

log = logging.getLogger("shadowproxy.triage")

SESSION_COOKIE = "shadowproxy_session"
CSRF_COOKIE = "shadowproxy_csrf"
MAX_FORM_BYTES = 4096
FORM_TYPE = "application/x-www-form-urlencoded"
_SAME_ORIGIN = frozenset({"same-origin", "none"})


def _measured(value: Any) -> str:
    """A criterion's number as ``shadowproxy readiness`` prints it (4 significant digits)."""
    if value is None:
        return "n/a"
    if isinstance(value, tuple | list):
        return ", ".join(map(str, value)) if value else "none"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 1e4 else f"{value:.4g}"
    return str(value)


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


templates = Environment(
    loader=PackageLoader("proxy", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.filters["measured"] = _measured
templates.filters["iso"] = _iso


class Csrf:
    """Signed double-submit tokens: ``<nonce>.<HMAC(key, nonce)>`` in a cookie and in the
    form, which must be equal. The signature means a cookie planted by another page of the
    same site (another port of this host) does not pass."""

    def __init__(self, key: bytes | None) -> None:
        self._key = key or secrets.token_bytes(32)  # no admin token: nothing to log in to

    def issue(self) -> str:
        nonce = secrets.token_urlsafe(18)
        return f"{nonce}.{self._mac(nonce)}"

    def valid(self, value: str) -> bool:
        nonce, sep, mac = value.partition(".")
        expected = self._mac(nonce).encode()
        return bool(sep) and hmac.compare_digest(mac.encode("utf-8", "surrogateescape"), expected)

    def check(self, request: web.Request, submitted: str) -> None:
        cookie = request.cookies.get(CSRF_COOKIE, "")
        same = hmac.compare_digest(
            cookie.encode("utf-8", "surrogateescape"), submitted.encode("utf-8", "surrogateescape")
        )
        if not (cookie and same and self.valid(cookie)):
            raise Forbidden("the form's CSRF token is missing or stale: reload the page")

    def _mac(self, nonce: str) -> str:
        return hmac.new(self._key, nonce.encode("utf-8", "surrogateescape"), sha256).hexdigest()


@dataclass(frozen=True)
class Page:
    """What one render needs besides the data: who is asking and what to tell them."""

    authorised: bool
    notice: str | None = None
    clear_session: bool = False


class Triage:
    def __init__(
        self,
        registry: CollectorRegistry,
        runner: ShadowRunner,
        sink: BufferedSink,
        flags: FlagsAdmin,
        auth: AdminToken,
    ) -> None:
        self._registry = registry
        self._runner = runner
        self._sink = sink
        self._flags = flags
        self._auth = auth
        self._csrf = Csrf(auth.key(b"triage csrf"))

    # --- handlers -------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.Response:
        counts = data.counters(self._registry)
        try:
            filters = data.parse_filters(request.query, self._routes(counts))
            page = self._who(request)
        except HTTPProblem as problem:
            return self._error(request, problem)
        return await self._render(request, filters, page, counts)

    async def login(self, request: web.Request) -> web.Response:
        try:
            form = await self._form(request, {"token", "csrf", "username"})
            if not self._auth.configured:
                raise Forbidden("login is disabled: no admin token is configured")
        except HTTPProblem as problem:
            return self._error(request, problem)
        if self._auth.problem(form.get("token", "")) is not None:
            page = Page(authorised=False, notice="wrong admin token")
            counts = data.counters(self._registry)
            return await self._render(request, data.Filters(), page, counts, status=401)
        response = _see_other()
        value, max_age = self._auth.session()
        _set_cookie(response, request, SESSION_COOKIE, value, max_age=max_age)
        _set_cookie(response, request, CSRF_COOKIE, self._csrf.issue())
        return response

    async def logout(self, request: web.Request) -> web.Response:
        try:
            await self._form(request, {"csrf"})
        except HTTPProblem as problem:
            return self._error(request, problem)
        response = _see_other()
        _set_cookie(response, request, SESSION_COOKIE, "", max_age=0)
        _set_cookie(response, request, CSRF_COOKIE, self._csrf.issue())
        return response

    # --- steps ----------------------------------------------------------------------------

    def _who(self, request: web.Request) -> Page:
        """A wrong header token is refused (401/403 page); a stale session cookie only
        loses the records, with a notice, and is cleared."""
        problem = self._auth.request_problem(request, cookie=SESSION_COOKIE)
        if problem is None:
            return Page(authorised=True)
        if header_token(request) is not None:
            raise problem
        if SESSION_COOKIE in request.cookies:
            notice = "your session has expired or is no longer valid: log in again"
            return Page(authorised=False, notice=notice, clear_session=True)
        return Page(authorised=False)

    async def _form(self, request: web.Request, allowed: set[str]) -> dict[str, str]:
        """A small urlencoded form from this site, its CSRF token checked."""
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in _SAME_ORIGIN:
            raise Forbidden("this form may only be posted from the triage page itself")
        if request.content_type != FORM_TYPE:
            raise UnsupportedMedia(f"expected {FORM_TYPE}, got {request.content_type!r}")
        body = await read_capped(request, MAX_FORM_BYTES)
        try:
            pairs = parse_qsl(
                body.decode("utf-8"), keep_blank_values=True, strict_parsing=True,
                max_num_fields=len(allowed),
            )  # fmt: skip
        except (UnicodeDecodeError, ValueError) as e:
            raise BadRequest(f"malformed form body: {e}") from e
        names = [name for name, _ in pairs]
        unknown = sorted(set(names) - allowed)
        if unknown or len(names) != len(set(names)):
            raise BadRequest("unexpected or repeated form field")
        form = dict(pairs)
        self._csrf.check(request, form.get("csrf", ""))
        return form

    def _routes(self, counts: list[data.RouteCounts]) -> set[str]:
        """What the route filter accepts: every resource and route this process knows."""
        snapshot = self._flags.store.snapshot()
        known = set(snapshot.resources) | set(snapshot.routes) | set(self._flags.decisions.targets)
        return known | {c.route for c in counts}

    async def _records(self) -> tuple[list[dict[str, Any]], str | None]:
        try:
            records = await self._sink.recent(data.SCANNED)
        except Exception as e:
            log.warning("triage: the mismatch sink could not be read", exc_info=True)
            return [], f"the mismatch sink could not be read: {type(e).__name__}: {e}"
        return [r for r in records if isinstance(r, dict)], None  # a stray line is no record

    async def _render(
        self,
        request: web.Request,
        filters: data.Filters,
        page: Page,
        counts: list[data.RouteCounts],
        *,
        status: int = 200,
    ) -> web.Response:
        store = self._flags.store
        snapshot = store.snapshot()
        context: dict[str, Any] = {
            "page": page,
            "filters": filters,
            "token_configured": self._auth.configured,
            "flags": data.flag_tables(snapshot),
            "flag_version": snapshot.version,
            "flag_store": {"healthy": store.healthy, "last_error": store.last_error},
            "queue_depth": self._runner.depth,
            "readiness": await data.readiness(self._flags.decisions),
            "counters": counts,
            "outcomes": data.OUTCOMES,
            "routes": sorted(self._routes(counts)),
        }
        if page.authorised:
            records, sink_error = await self._records()
            kept = [r for r in records if filters.keeps(r)]
            context.update(
                records=[data.record_view(r, filters) for r in kept[: filters.limit]],
                matched=len(kept),
                scanned=len(records),
                sink_error=sink_error,
                fields=data.known_fields(counts, records),
            )
        csrf = request.cookies.get(CSRF_COOKIE, "")
        fresh = not self._csrf.valid(csrf)
        if fresh:
            csrf = self._csrf.issue()
        response = _html("triage.html", status=status, csrf=csrf, **context)
        if fresh:
            _set_cookie(response, request, CSRF_COOKIE, csrf)
        if page.clear_session:
            _set_cookie(response, request, SESSION_COOKIE, "", max_age=0)
        return response

    def _error(self, request: web.Request, problem: HTTPProblem) -> web.Response:
        return _html(
            "triage_error.html",
            status=problem.status,
            problem=problem,
            request_id=request_id(request),
        )


def _html(template: str, *, status: int, **context: Any) -> web.Response:
    nonce = secrets.token_urlsafe(16)
    text = templates.get_template(template).render(nonce=nonce, **context)
    response = web.Response(text=text, status=status, content_type="text/html", charset="utf-8")
    response.headers.update(security_headers(nonce))
    return response


def security_headers(nonce: str) -> dict[str, str]:
    """No script at all; the one inline stylesheet by nonce; forms only to this origin."""
    policy = (
        f"default-src 'none'; style-src 'nonce-{nonce}'; img-src data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def _see_other() -> web.Response:
    return web.Response(status=303, headers={"Location": "/", "Cache-Control": "no-store"})


def _set_cookie(
    response: web.StreamResponse,
    request: web.Request,
    name: str,
    value: str,
    *,
    max_age: int | None = None,
) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path="/", secure=request.secure, httponly=True,
        samesite="Strict",
    )  # fmt: skip


def add_routes(app: web.Application, triage: Triage) -> None:
    app.router.add_get("/", triage.index)
    app.router.add_post("/login", triage.login)
    app.router.add_post("/logout", triage.logout)
