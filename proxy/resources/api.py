"""The resource API over HTTP: parse and validate, call the service, map errors.

    GET    /users/{key}?fields=a,b      one record; 404 when absent
    GET    /users?email=x               equality lookup on a declared index
    GET    /users?first_name=x&limit=&cursor=   filtered list, opaque cursor
    POST   /users                       create; 201; 409 when the key exists
    PUT    /users/{key}                 replace (upsert)
    PATCH  /users/{key}                 partial update; 404 when absent
    DELETE /users/{key}                 204; 404 when absent
    POST   /users/batch                 upsert many; per-item results
    POST   /users/batch-get             many keys

A bad request never reaches a store: every body, key and parameter is validated first, and a
record over ``max_record_bytes`` is refused (413) before any store is written. Bodies are read
and answers written with exact numbers (``proxy.store.exactjson``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from proxy.errors import (
    RETRY_SOON,
    BadGateway,
    BadRequest,
    Conflict,
    GatewayTimeout,
    HTTPProblem,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    Unprocessable,
    UnsupportedMedia,
    problem_response,
)
from proxy.ratelimit.limiter import RateLimiter
from proxy.request import RequestAccounting, read_capped, request_id
from proxy.resources.service import RequestInfo, ResourceService
from proxy.store import base as store_errors
from proxy.store import exactjson
from proxy.store.base import Record
from proxy.store.schema import SchemaError
from proxy.store.sizes import RecordTooLarge, check_record_size
from proxy.types import Handler

errlog = logging.getLogger("shadowproxy.resources")

RESERVED_PARAMS = frozenset({"limit", "cursor", "fields"})
DEFAULT_LIMIT = 100


def _json_response(body: bytes, status: int = 200) -> web.Response:
    """The handler wrapper adds ``X-Request-ID``."""
    return web.Response(body=body, status=status, content_type="application/json")


async def read_json(request: web.Request, limit: int) -> Any:
    ctype = request.content_type
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise UnsupportedMedia(f"expected Content-Type application/json, got {ctype!r}")
    body = await read_capped(request, limit)
    try:
        return exactjson.loads(body)
    except exactjson.JSONDecodeError as e:
        raise BadRequest(f"malformed JSON: {e}") from e


def _schema_problem(error: SchemaError) -> Unprocessable:
    return Unprocessable("the request does not match the resource schema", details=error.errors)


def _too_large(error: RecordTooLarge) -> PayloadTooLarge:
    detail = {"field": error.field, "message": f"the largest field: {error.field_size} bytes"}
    return PayloadTooLarge(str(error), details=[detail])


def _store_problem(error: store_errors.StoreError, resource: str) -> HTTPProblem:
    """The client's answer to a store error. Only our own words reach the client: a store's
    or driver's text (constraint details hold the conflicting values, connection errors
    name hosts) goes to the log with the request id, never into the answer."""
    if isinstance(error, store_errors.RecordNotFound):
        return NotFound(f"{resource} not found")
    if isinstance(error, store_errors.KeyConflict):
        return Conflict(f"{resource} already exists: its key or a unique index value is taken")
    if isinstance(error, RecordTooLarge):  # a PATCH that would grow the record too large
        return _too_large(error)
    if isinstance(error, store_errors.LimitExceeded):  # our own check's message
        return PayloadTooLarge(str(error))
    if isinstance(error, store_errors.InvalidCursor):  # ditto
        return BadRequest(f"invalid cursor: {error}")
    if isinstance(error, store_errors.StoreTimeout):
        return GatewayTimeout("the primary store timed out")
    if isinstance(error, store_errors.StoreBusy):
        return Unavailable(
            "the primary store is at its connection limit; try again", headers=RETRY_SOON
        )
    if isinstance(error, store_errors.Throttled):
        return Unavailable(
            "the primary store is throttling requests; try again", headers=RETRY_SOON
        )
    if isinstance(error, store_errors.StoreUnavailable):
        return Unavailable("the primary store is unavailable")
    return BadGateway("the primary store failed")


def _limit(raw: str | None, maximum: int) -> int:
    if raw is None:
        return min(DEFAULT_LIMIT, maximum)
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= maximum:
        raise BadRequest(f"limit must be an integer from 1 to {maximum}, got {raw!r}")
    return int(raw)


class ResourceAPI:
    def __init__(
        self,
        service: ResourceService,
        *,
        requests: RequestAccounting,
        max_body: int,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.service = service
        self.schema = service.schema
        self.settings = service.parts.settings
        self._requests = requests
        self._max_body = max_body
        self._limiter = limiter

    def routes(self) -> list[web.RouteDef]:
        p = self.settings.prefix
        wrap = self._wrap
        return [
            web.post(f"{p}/batch", wrap("batch_put", self.batch_put)),
            web.post(f"{p}/batch-get", wrap("batch_get", self.batch_get)),
            web.get(f"{p}/{{key}}", wrap("get", self.get), allow_head=False),
            web.put(f"{p}/{{key}}", wrap("put", self.replace)),
            web.patch(f"{p}/{{key}}", wrap("update", self.update)),
            web.delete(f"{p}/{{key}}", wrap("delete", self.delete)),
            web.get(p, wrap("query", self.query), allow_head=False),
            web.post(p, wrap("create", self.create)),
        ]

    def _wrap(
        self, operation: str, handler: Callable[[web.Request, RequestInfo], Awaitable[web.Response]]
    ) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            started = time.perf_counter()
            rid = request_id(request)
            requester = self._requests.requester(request)
            # The path as the client sent it (no URL object built per request).
            info = RequestInfo(rid, requester, request.method, request.raw_path)
            cause: str | None = None
            try:
                if self._limiter is not None:  # before the body is read or a store asked
                    await self._limiter.check(self.settings.name, requester)
                response = await handler(request, info)
            except SchemaError as e:
                problem: HTTPProblem = _schema_problem(e)
            except store_errors.StoreError as e:
                problem = _store_problem(e, self.settings.name)
                cause = f"{type(e).__name__}: {e}"
            except HTTPProblem as e:
                problem = e
            except Exception:
                errlog.exception("unexpected error", extra={"request_id": rid})
                problem = HTTPProblem("internal error")
            else:
                response.headers["X-Request-ID"] = rid
                self._account(request, operation, response.status, requester, rid, started)
                return response
            status = problem.status
            self._account(request, operation, status, requester, rid, started)
            if status >= 500:
                message = problem.message if cause is None else f"{problem.message}: {cause}"
                errlog.warning(message, extra={"request_id": rid, "status": status})
            return problem_response(problem, rid)

        return handle

    def _account(
        self,
        request: web.Request,
        operation: str,
        status: int,
        requester: str | None,
        rid: str,
        started: float,
    ) -> None:
        self._requests.finish(
            self.settings.name,
            request.method,
            status,
            requester,
            rid,
            request.path,
            started,
            operation=operation,
        )

    # --- handlers ---------------------------------------------------------------------------

    def _key(self, request: web.Request) -> Any:
        return self.schema.parse_key(request.match_info["key"])

    def _fields(self, request: web.Request) -> tuple[str, ...] | None:
        raw = request.query.get("fields")
        if raw is None:
            return None
        return self.schema.check_fields(f for f in raw.split(",") if f)

    async def get(self, request: web.Request, info: RequestInfo) -> web.Response:
        query = request.query_string  # most reads have none: then nothing to parse
        if query:
            self._only(request, {"fields"})
        key = self._key(request)
        body = await self.service.get(key, self._fields(request) if query else None, info)
        if body is None:
            raise NotFound(f"{self.settings.name} {request.match_info['key']!r} not found")
        return _json_response(body)

    async def query(self, request: web.Request, info: RequestInfo) -> web.Response:
        params = {k: v for k, v in request.query.items() if k not in RESERVED_PARAMS}
        if len(params) != len(set(request.query.keys()) - RESERVED_PARAMS):
            raise BadRequest("a query parameter is repeated")
        limit = _limit(request.query.get("limit"), self.settings.max_list_limit)
        fields = self._fields(request)
        filters = self.schema.parse_filters(params)
        index = self._index_for(filters)
        if index is not None and "cursor" not in request.query:
            found = await self.service.lookup(index, filters[self._index_field(index)], limit, info)
            items = found if fields is None else [{f: i[f] for f in fields} for i in found]
            return _json_response(exactjson.dumps({"items": items, "next_cursor": None}))
        records, cursor = await self.service.list_records(
            filters, limit, request.query.get("cursor"), info
        )
        items = [self.schema.to_json(r, fields=fields) for r in records]
        return _json_response(exactjson.dumps({"items": items, "next_cursor": cursor}))

    def _index_field(self, index: str) -> str:
        return self.schema.indexes[index].field

    def _index_for(self, filters: dict[str, Any]) -> str | None:
        if len(filters) != 1:
            return None
        (field,) = filters
        for name, index in self.schema.indexes.items():
            if index.field == field:
                return name
        return None

    async def create(self, request: web.Request, info: RequestInfo) -> web.Response:
        self._only(request, set())
        record = self.schema.validate(
            self._object(await read_json(request, self._max_body)), partial=False
        )
        self._fits(record)
        created = await self.service.writes.create(record)
        return _json_response(self.schema.dumps(created), status=201)

    async def replace(self, request: web.Request, info: RequestInfo) -> web.Response:
        self._only(request, set())
        key = self._key(request)
        body = self._object(await read_json(request, self._max_body))
        body.setdefault(self.schema.key, request.match_info["key"])
        record = self.schema.validate(body, partial=False)
        if record[self.schema.key] != key:
            raise Unprocessable(
                "the key in the body differs from the key in the path",
                details=[{"field": self.schema.key, "message": "does not match the path"}],
            )
        self._fits(record)
        return _json_response(self.schema.dumps(await self.service.writes.replace(record)))

    async def update(self, request: web.Request, info: RequestInfo) -> web.Response:
        self._only(request, set())
        key = self._key(request)
        body = self._object(await read_json(request, self._max_body))
        changes = self.schema.check_changes(key, self.schema.validate(body, partial=True))
        if not changes:
            raise Unprocessable("nothing to update: the body names no field besides the key")
        return _json_response(self.schema.dumps(await self.service.writes.update(key, changes)))

    async def delete(self, request: web.Request, info: RequestInfo) -> web.Response:
        self._only(request, set())
        await self.service.writes.delete(self._key(request))
        return web.Response(status=204)

    async def batch_put(self, request: web.Request, info: RequestInfo) -> web.Response:
        body = self._object(await read_json(request, self._max_body))
        items = body.get("items")
        if set(body) != {"items"} or not isinstance(items, list):
            raise BadRequest('expected {"items": [record, ...]}')
        self._batch_size(len(items))
        records: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        seen: set[Any] = set()
        for i, item in enumerate(items):
            try:
                record = self.schema.validate(self._object(item), partial=False)
            except (SchemaError, BadRequest) as e:
                details = e.errors if isinstance(e, SchemaError) else [{"message": str(e)}]
                errors.extend({"item": i, **d} for d in details)
                continue
            key = record[self.schema.key]
            if key in seen:
                errors.append({"item": i, "field": self.schema.key, "message": "duplicate key"})
            seen.add(key)
            records.append(record)
        if errors:
            raise Unprocessable(
                "some items do not match the schema; nothing was written", details=errors
            )
        too_large = []
        for i, record in enumerate(records):
            try:
                check_record_size(self.schema, record)
            except RecordTooLarge as e:
                too_large.append({"item": i, "field": e.field, "message": str(e)})
        if too_large:
            raise PayloadTooLarge(
                "some items are over max_record_bytes; nothing was written", details=too_large
            )
        results = await self.service.writes.batch_put(records)
        out = [
            {"key": self.schema.render_key(r.key), "status": "ok"}
            if r.ok
            else {"key": self.schema.render_key(r.key), "status": "error", "error": str(r.error)}
            for r in results
        ]
        failed = sum(1 for r in results if not r.ok)
        return _json_response(
            orjson.dumps({"results": out, "written": len(out) - failed, "failed": failed})
        )

    async def batch_get(self, request: web.Request, info: RequestInfo) -> web.Response:
        body = self._object(await read_json(request, self._max_body))
        keys = body.get("keys")
        if set(body) != {"keys"} or not isinstance(keys, list):
            raise BadRequest('expected {"keys": [key, ...]}')
        self._batch_size(len(keys))
        parsed = [self.schema.validate_value(self.schema.key, k) for k in keys]
        unique = list(dict.fromkeys(parsed))
        records = await self.service.batch_get(unique, info)
        fields = self._fields(request)
        found = {r[self.schema.key] for r in records}
        return _json_response(
            exactjson.dumps(
                {
                    "items": [self.schema.to_json(r, fields=fields) for r in records],
                    "missing": [self.schema.render_key(k) for k in unique if k not in found],
                }
            )
        )

    # --- checks -----------------------------------------------------------------------------

    def _object(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise BadRequest(f"expected a JSON object, got {type(value).__name__}")
        return value

    def _fits(self, record: Record) -> None:
        """A record over ``max_record_bytes`` is refused before any store is written: written
        to one store it could never be copied to DynamoDB (its key stuck in the repair log)."""
        try:
            check_record_size(self.schema, record)
        except RecordTooLarge as e:
            raise _too_large(e) from e

    def _batch_size(self, count: int) -> None:
        if count == 0:
            raise BadRequest("the batch is empty")
        if count > self.settings.max_batch_items:
            raise PayloadTooLarge(
                f"{count} items in one batch; at most {self.settings.max_batch_items}"
            )

    def _only(self, request: web.Request, allowed: set[str]) -> None:
        unknown = sorted(set(request.query.keys()) - allowed)
        if unknown:
            raise BadRequest(f"unknown query parameter {unknown[0]!r}")
