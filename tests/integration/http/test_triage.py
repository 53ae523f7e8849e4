"""The triage page on the admin port against a running proxy: the summary is open, records
need the token (header or the login's session cookie), login and logout are CSRF-checked,
filters work server-side, bad input gets a 4xx page, and nothing sensitive is rendered."""

from __future__ import annotations

import asyncio
import re
from http.cookies import SimpleCookie

import aiohttp
import pytest
from aiohttp import web

from proxy.control.triage import CSRF_COOKIE, SESSION_COOKIE
from tests.integration.http.conftest import ProxyFactory, UpstreamFactory
from tests.support.servers import RunningProxy

pytestmark = pytest.mark.integration

TOKEN = "triage-admin-t0ken-do-not-render"
SECRET_EMAIL = "planted.secret@example.com"
SECRET_SSN = "078-05-1120"
ENV = {"SHADOWPROXY_ADMIN_TOKEN": TOKEN, "SHADOWPROXY_REDACTION_KEY": "triage-key"}
FORM = "application/x-www-form-urlencoded"


async def primary_answer(request: web.Request) -> web.Response:
    return web.json_response(
        {"id": 1, "email": SECRET_EMAIL, "ssn": SECRET_SSN, "name": "Ada", "total": 10}
    )


async def shadow_answer(request: web.Request) -> web.Response:
    if request.path.startswith("/orders"):
        return web.json_response(
            {"id": 1, "email": SECRET_EMAIL, "ssn": SECRET_SSN, "name": "Ada", "total": 11}
        )
    return web.json_response(
        {"id": 1, "email": "other@example.com", "ssn": "000-00-0000", "name": "Bob", "total": 10}
    )


ROUTES = [
    {"name": "users", "path": "/users/*", "methods": ["GET"], "primary": "primary",
     "shadow": "shadow"},
    {"name": "orders", "path": "/orders/*", "methods": ["GET"], "primary": "primary",
     "shadow": "shadow"},
]  # fmt: skip


async def mismatching_proxy(
    upstream_factory: UpstreamFactory,
    proxy_factory: ProxyFactory,
    env: dict[str, str] | None = None,
) -> RunningProxy:
    """Two shadowed routes: ``users`` differs in email, ssn and name; ``orders`` in total.
    Two mismatch records each; one of the users requests has a sensitive value in its query."""
    primary = await upstream_factory(primary_answer)
    shadow = await upstream_factory(shadow_answer)
    proxy = await proxy_factory(primary, shadow, env=ENV if env is None else env, routes=ROUTES)
    async with aiohttp.ClientSession() as c:
        for path in (f"/users/1?email={SECRET_EMAIL}", "/users/2", "/orders/1", "/orders/2"):
            async with c.get(proxy.url + path) as r:
                assert r.status == 200

    def mismatches() -> float:
        return sum(
            proxy.value(
                "shadowproxy_comparisons_total", route=r, operation="GET", outcome="mismatch"
            )
            for r in ("users", "orders")
        )

    await proxy.wait_for(lambda: mismatches() == 4)
    return proxy


def cookies_of(response: aiohttp.ClientResponse) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.getall("Set-Cookie", []):
        jar.load(header)
    return jar


def csrf_field(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no CSRF field"
    return found[1]


async def page(
    client: aiohttp.ClientSession, proxy: RunningProxy, query: str = "", **headers: str
) -> tuple[int, str, aiohttp.ClientResponse]:
    async with client.get(f"{proxy.admin_url}/{query}", headers=headers) as r:
        return r.status, await r.text(), r


async def login(
    client: aiohttp.ClientSession, proxy: RunningProxy, token: str = TOKEN
) -> tuple[int, aiohttp.ClientResponse, str]:
    """GET / for the CSRF cookie and field, then POST /login; the session cookie value."""
    _, html, first = await page(client, proxy)
    csrf = cookies_of(first)[CSRF_COOKIE].value
    assert csrf_field(html) == csrf
    async with client.post(
        proxy.admin_url + "/login",
        data={"token": token, "csrf": csrf},
        headers={"Cookie": f"{CSRF_COOKIE}={csrf}"},
        allow_redirects=False,
    ) as r:
        await r.read()
        jar = cookies_of(r)
        session = jar[SESSION_COOKIE].value if SESSION_COOKIE in jar else ""
        return r.status, r, session


def assert_nothing_sensitive(html: str) -> None:
    for secret in (TOKEN, SECRET_EMAIL, SECRET_SSN, "planted.secret%40example.com"):
        assert secret not in html


# --- the summary ---------------------------------------------------------------------------


async def test_summary_needs_no_token_and_leaves_the_records_out(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    proxy = await mismatching_proxy(upstream_factory, proxy_factory)
    status, html, r = await page(client, proxy)
    assert status == 200
    assert r.content_type == "text/html"
    for section in ('id="flags"', 'id="readiness"', 'id="counters"', 'id="login"'):
        assert section in html
    assert 'data-target="users" data-kind="route"' in html
    assert "<code>shadow</code>" in html  # the users route's shadow flag
    assert 'data-decision="flip_reads" data-ready="false"' in html
    orders = re.search(r'<tr data-route="orders">(.*?)</tr>', html, re.S)
    assert orders is not None
    assert '<td class="num" data-outcome="match">0</td>' in orders[1]
    assert '<td class="num" data-outcome="mismatch">2</td>' in orders[1]
    # the records and their diffs are not in the HTML at all
    assert 'id="mismatches"' not in html
    assert 'class="record"' not in html
    assert "redacted:" not in html
    async with client.get(
        proxy.admin_url + "/mismatches", headers={"X-Admin-Token": TOKEN}
    ) as listing:
        records = (await listing.json())["mismatches"]
    assert len(records) == 4
    for record in records:
        assert record["request_id"] not in html
    assert_nothing_sensitive(html)


async def test_the_page_forbids_scripts_and_framing(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    proxy = await proxy_factory(await upstream_factory(), env=ENV)
    _, html, r = await page(client, proxy)
    policy = r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "script-src" not in policy  # default-src 'none' covers scripts: none at all
    nonce = re.search(r"style-src 'nonce-([^']+)'", policy)
    assert nonce and f'<style nonce="{nonce[1]}">' in html
    assert "frame-ancestors 'none'" in policy and "form-action 'self'" in policy
    assert "<script" not in html and " style=" not in html and "http://" not in html.lower()
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Cache-Control"] == "no-store"
    _, _, again = await page(client, proxy)
    assert again.headers["Content-Security-Policy"] != policy  # a fresh nonce per response


async def test_a_wrong_header_token_gets_a_401_page(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    proxy = await mismatching_proxy(upstream_factory, proxy_factory)
    for headers in ({"X-Admin-Token": "wrong"}, {"Authorization": "Bearer wrong"}):
        status, html, r = await page(client, proxy, **headers)
        assert status == 401 and r.content_type == "text/html"
        assert 'data-code="unauthorized"' in html and 'class="record"' not in html


async def test_without_a_configured_token_there_is_no_login(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    proxy = await mismatching_proxy(upstream_factory, proxy_factory, env={})
    status, html, first = await page(client, proxy)
    assert status == 200 and 'id="no-token"' in html and 'id="login"' not in html
    assert 'id="mismatches"' not in html
    status, html, _ = await page(client, proxy, **{"X-Admin-Token": ""})
    assert status == 403
    csrf = cookies_of(first)[CSRF_COOKIE].value
    async with client.post(
        proxy.admin_url + "/login",
        data={"token": "", "csrf": csrf},
        headers={"Cookie": f"{CSRF_COOKIE}={csrf}"},
        allow_redirects=False,
    ) as r:
        assert r.status == 403 and SESSION_COOKIE not in cookies_of(r)


# --- records with the token ------------------------------------------------------------------


async def test_the_header_token_shows_records_side_by_side_redacted(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    proxy = await mismatching_proxy(upstream_factory, proxy_factory)
    status, html, _ = await page(client, proxy, **{"X-Admin-Token": TOKEN})
    assert status == 200
    assert 'id="mismatches"' in html and 'id="logout"' in html
    assert html.count('<article class="record"') == 4
    assert 'data-path="body.email"' in html and 'data-path="body.total"' in html
    row = re.search(r'data-path="body.name">(.*?)</tr>', html, re.S)
    assert row is not None
    assert 'class="side primary"><pre>&#34;Ada&#34;</pre>' in row[1]
    assert 'class="side shadow"><pre>&#34;Bob&#34;</pre>' in row[1]
    email = re.search(r'data-path="body.email">(.*?)</tr>', html, re.S)
    assert email is not None and email[1].count("redacted:") == 2
    assert_nothing_sensitive(html)


async def test_login_sets_a_strict_httponly_session_that_is_not_the_token(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    proxy = await mismatching_proxy(upstream_factory, proxy_factory)
    status, r, session = await login(client, proxy)
    assert status == 303 and r.headers["Location"] == "/"
    raw = [h for h in r.headers.getall("Set-Cookie") if h.startswith(SESSION_COOKIE + "=")]
    assert len(raw) == 1
    morsel = cookies_of(r)[SESSION_COOKIE]
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Strict"
    assert morsel["path"] == "/"
    assert morsel["secure"] == ""  # a plain-HTTP listener: a Secure cookie would never return
    assert int(morsel["max-age"]) == 8 * 3600
    assert session and TOKEN not in session
    for header in r.headers.getall("Set-Cookie"):
        assert TOKEN not in header

    cookie = f"{SESSION_COOKIE}={session}"
    status, html, _ = await page(client, proxy, Cookie=cookie)
    assert status == 200 and html.count('<article class="record"') == 4
    assert_nothing_sensitive(html)
    # the session cookie is for the page only: the JSON API still wants the token itself
    async with client.get(proxy.admin_url + "/mismatches", headers={"Cookie": cookie}) as api:
        assert api.status == 401
    async with client.get(
        proxy.admin_url + "/mismatches", headers={"Authorization": f"Bearer {session}"}
    ) as api:
        assert api.status == 401

    # logout: CSRF-checked, clears the cookie; the page goes back to the summary
    csrf = csrf_field(html)
    async with client.post(
        proxy.admin_url + "/logout",
        data={"csrf": csrf},
        headers={"Cookie": f"{cookie}; {CSRF_COOKIE}={csrf}"},
        allow_redirects=False,
    ) as out:
        assert out.status == 303
        cleared = cookies_of(out)[SESSION_COOKIE]
        assert cleared.value == "" and cleared["max-age"] == "0"
        assert cleared["httponly"] is True and cleared["samesite"] == "Strict"


async def test_a_wrong_login_is_401_and_sets_no_session(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    proxy = await mismatching_proxy(upstream_factory, proxy_factory)
    status, r, session = await login(client, proxy, token="not-it")
    assert status == 401 and session == ""
    assert r.content_type == "text/html"


async def test_a_forged_or_expired_session_shows_the_summary_only(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    proxy = await mismatching_proxy(upstream_factory, proxy_factory)
    _, _, session = await login(client, proxy)
    expires, _, mac = session.partition(".")
    for forged in (TOKEN, f"{int(expires) + 3600}.{mac}", "1.00", f"{expires}.{'0' * 64}"):
        status, html, r = await page(client, proxy, Cookie=f"{SESSION_COOKIE}={forged}")
        assert status == 200 and 'id="mismatches"' not in html
        assert 'id="notice"' in html and 'id="login"' in html
        assert cookies_of(r)[SESSION_COOKIE]["max-age"] == "0"


# --- CSRF ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", ["no cookie", "no field", "different", "unsigned", "cross-site", "same-site"]
)
async def test_login_without_a_matching_signed_csrf_token_is_refused(
    case: str,
    upstream_factory: UpstreamFactory,
    proxy_factory: ProxyFactory,
    client: aiohttp.ClientSession,
) -> None:
    proxy = await proxy_factory(await upstream_factory(), env=ENV)
    _, _, first = await page(client, proxy)
    good = cookies_of(first)[CSRF_COOKIE].value
    cookie, field, headers = good, good, {}
    if case == "no cookie":
        cookie = ""
    elif case == "no field":
        field = ""
    elif case == "different":
        _, _, other = await page(client, proxy)
        field = cookies_of(other)[CSRF_COOKIE].value
    elif case == "unsigned":  # what a page planting a cookie from another port could do
        cookie = field = "attacker-chosen.0123"
    else:
        headers = {"Sec-Fetch-Site": case}
    form = {"token": TOKEN, **({"csrf": field} if field else {})}
    async with client.post(
        proxy.admin_url + "/login",
        data=form,
        headers={**headers, **({"Cookie": f"{CSRF_COOKIE}={cookie}"} if cookie else {})},
        allow_redirects=False,
    ) as r:
        body = await r.text()
        assert r.status == 403, body
        assert r.content_type == "text/html" and 'data-code="forbidden"' in body
        assert SESSION_COOKIE not in cookies_of(r)


async def test_logout_without_the_csrf_token_is_refused(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    proxy = await proxy_factory(await upstream_factory(), env=ENV)
    _, _, session = await login(client, proxy)
    async with client.post(
        proxy.admin_url + "/logout",
        data={},
        headers={"Cookie": f"{SESSION_COOKIE}={session}"},
        allow_redirects=False,
    ) as r:
        assert r.status == 403
        assert SESSION_COOKIE not in cookies_of(r)


# --- filters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "routes", "count"),
    [
        ("", {"users", "orders"}, 4),
        ("?route=users", {"users"}, 2),
        ("?route=orders", {"orders"}, 2),
        ("?field=body.total", {"orders"}, 2),
        ("?field=body", {"users", "orders"}, 4),  # a field keeps the fields below it
        ("?route=orders&field=body.email", set(), 0),
        ("?route=&field=&limit=1", None, 1),  # the newest, whichever route it was
        ("?field=bod", set(), 0),  # a prefix of a name is not a parent field
    ],
)
async def test_filters_narrow_the_records_server_side(
    query: str,
    routes: set[str] | None,
    count: int,
    upstream_factory: UpstreamFactory,
    proxy_factory: ProxyFactory,
    client: aiohttp.ClientSession,
) -> None:
    proxy = await mismatching_proxy(upstream_factory, proxy_factory)
    status, html, _ = await page(client, proxy, query, **{"X-Admin-Token": TOKEN})
    assert status == 200
    shown = re.findall(r'<article class="record" data-route="([^"]+)"', html)
    assert len(shown) == count
    assert routes is None or set(shown) == routes
    if count == 0:
        assert 'id="no-records"' in html
    if "field=body.total" in query:
        assert 'class="difference hit" data-path="body.total"' in html


@pytest.mark.parametrize(
    "query",
    [
        "?route=nope",
        "?route=users&route=orders",
        "?colour=red",
        "?limit=0",
        "?limit=201",
        "?limit=abc",
        "?field=" + "x" * 201,
        "?field=a%0Ab",
    ],
)
async def test_bad_filters_get_a_400_page(
    query: str,
    upstream_factory: UpstreamFactory,
    proxy_factory: ProxyFactory,
    client: aiohttp.ClientSession,
) -> None:
    proxy = await mismatching_proxy(upstream_factory, proxy_factory)
    for headers in ({}, {"X-Admin-Token": TOKEN}):
        status, html, r = await page(client, proxy, query, **headers)
        assert status == 400 and r.content_type == "text/html"
        assert 'data-code="bad_request"' in html
        assert "Content-Security-Policy" in r.headers
    status, html, _ = await page(client, proxy, "?route=nope")
    assert "known: orders, users" in html


# --- bad form bodies -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("application/json", b'{"token": "x"}', 415),
        ("text/plain", b"token=x", 415),
        ("multipart/form-data; boundary=x", b"--x--", 415),
        (FORM, b"token=" + b"x" * 5000, 413),
        (FORM, b"token=" + b"x" * 70_000, 413),  # past the admin port's own cap too
        (FORM, b"token=\xff\xfe", 400),
        (FORM, b"token=a&token=b", 400),
        (FORM, b"token=a&other=b", 400),
        (FORM, b"garbage-without-equals", 400),
    ],
)
async def test_bad_login_bodies_get_a_4xx_page(
    content_type: str,
    body: bytes,
    status: int,
    upstream_factory: UpstreamFactory,
    proxy_factory: ProxyFactory,
    client: aiohttp.ClientSession,
) -> None:
    proxy = await proxy_factory(await upstream_factory(), env=ENV)
    _, _, first = await page(client, proxy)
    csrf = cookies_of(first)[CSRF_COOKIE].value
    async with client.post(
        proxy.admin_url + "/login",
        data=body,
        headers={"Content-Type": content_type, "Cookie": f"{CSRF_COOKIE}={csrf}"},
        allow_redirects=False,
    ) as r:
        assert r.status == status
        assert r.content_type == "text/html"
        assert SESSION_COOKIE not in cookies_of(r)


async def test_get_login_is_not_a_way_in(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    proxy = await proxy_factory(await upstream_factory(), env=ENV)
    async with client.get(proxy.admin_url + f"/login?token={TOKEN}") as r:
        assert r.status == 405


# --- what the page survives ------------------------------------------------------------------


async def test_odd_lines_in_the_sink_do_not_break_the_page(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    proxy = await mismatching_proxy(upstream_factory, proxy_factory)
    sink = proxy.settings.sink
    assert sink.kind == "jsonl"
    odd = '5\n"text"\nnot json\n{"route": "users", "differences": "nope"}\n{"route": 3}\n'

    def append() -> None:
        with open(sink.path, "a", encoding="utf-8") as f:
            f.write(odd)

    await asyncio.to_thread(append)
    status, html, _ = await page(client, proxy, "?field=body", **{"X-Admin-Token": TOKEN})
    assert status == 200
    assert html.count('<article class="record"') == 4


async def test_an_unreachable_sink_is_a_message_not_an_error(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    proxy = await proxy_factory(
        await upstream_factory(),
        env=ENV,
        sink={"kind": "redis", "url": "redis://127.0.0.1:1/0", "stream": "triage-test"},
    )
    status, html, _ = await page(client, proxy, **{"X-Admin-Token": TOKEN})
    assert status == 200
    assert 'id="sink-error"' in html and "the mismatch sink could not be read" in html
