"""Store mode: a recorded read done again on the resource's two stores, through their codecs,
compared under the resource's rules as the live shadow read compares it (a record, or
``{"items": [...]}`` keyed by the primary key), re-read before a difference stands.

The primary is the config's ``flags.read_from`` and the other store the one it is compared
with; the live flags are not asked (which side is called primary only names the columns).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from comparators import Comparison, Redactor, Rules, compare
from comparators.model import Outcome
from proxy.errors import ConfigError
from proxy.replay.answers import plain
from proxy.replay.model import Case, Request, Result, Verdict
from proxy.resources.api import DEFAULT_LIMIT, RESERVED_PARAMS
from proxy.resources.parts import ResourceParts
from proxy.resources.wiring import build_parts
from proxy.settings import Settings
from proxy.store.base import Store, StoreError
from proxy.store.schema import SchemaError

Reader = Callable[[Store], Awaitable[Any]]


@dataclass(frozen=True)
class Read:
    """One read of the resource API, parsed from a recorded path."""

    operation: str  # get, lookup, list
    key: Any = None
    fields: tuple[str, ...] | None = None
    index: str | None = None
    value: Any = None
    filters: Mapping[str, Any] = field(default_factory=dict)
    limit: int = DEFAULT_LIMIT


@dataclass(frozen=True)
class Failure:
    store: str
    detail: str
    sides: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls, store: str, error: BaseException, sides: Mapping[str, str] | None = None
    ) -> Failure:
        detail = f"{store}: {type(error).__name__}: {error}"[:300]
        return cls(store, detail, {**(sides or {}), store: "error"})


def parse_read(parts: ResourceParts, request: Request) -> Read | str:
    """The read ``request`` made, or why it cannot be made again."""
    split = urlsplit(request.path)
    prefix = parts.settings.prefix
    params = parse_qsl(split.query, keep_blank_values=True)
    try:
        if request.operation == "get":
            rest = split.path.removeprefix(prefix + "/")
            if rest == split.path or not rest or "/" in rest:
                return f"the path is not a {parts.name} key path ({prefix}/KEY)"
            return Read(
                "get", key=parts.schema.parse_key(unquote(rest)), fields=_fields(parts, params)
            )
        if split.path != prefix:
            return f"the path is neither {prefix}/KEY nor {prefix}?QUERY"
        query = dict(params)
        if "cursor" in query:
            return "a list page's cursor belongs to the store and the moment it came from"
        filters = parts.schema.parse_filters(
            {k: v for k, v in query.items() if k not in RESERVED_PARAMS}
        )
        limit = _limit(query.get("limit"), parts.settings.max_list_limit)
    except SchemaError as e:
        names = ", ".join(sorted({str(err.get("field", "")) for err in e.errors})) or "?"
        return f"the request no longer fits the resource schema ({names})"
    except ValueError as e:
        return str(e)
    index = _index_for(parts, filters) if request.operation == "lookup" else None
    if request.operation == "lookup" and index is None:
        return "the lookup names no declared index"
    return Read(request.operation, index=index, filters=filters, limit=limit,
                value=filters[parts.schema.indexes[index].field] if index else None,
                fields=_fields(parts, params))  # fmt: skip


def _fields(parts: ResourceParts, params: list[tuple[str, str]]) -> tuple[str, ...] | None:
    raw = dict(params).get("fields")
    if raw is None:
        return None
    return parts.schema.check_fields(f for f in raw.split(",") if f)


def _limit(raw: str | None, maximum: int) -> int:
    if raw is None:
        return min(DEFAULT_LIMIT, maximum)
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise ValueError(f"limit {raw!r} is outside 1..{maximum}")
    return int(raw)


def _index_for(parts: ResourceParts, filters: Mapping[str, Any]) -> str | None:
    if len(filters) != 1:
        return None
    (name,) = filters
    return next((i for i, spec in parts.schema.indexes.items() if spec.field == name), None)


def store_pair(parts: ResourceParts) -> tuple[str, str]:
    """(primary, other): the config's ``read_from`` and the store compared with it."""
    primary = parts.settings.flags.read_from
    others = [n for n in parts.stores if n != primary]
    if not others:
        raise ConfigError(f"resources.{parts.name}.stores: one store only, nothing to compare")
    other = parts.new_store if parts.new_store in others else others[0]
    return primary, other or others[0]


class StoreSide:
    def __init__(self, settings: Settings, redactor: Redactor, env: Mapping[str, str]) -> None:
        self._settings = settings
        self._redactor = redactor
        self._env = env
        self._parts: dict[str, ResourceParts] = {}
        self._opened: list[Store] = []

    async def open(self, resources: Iterable[str]) -> None:
        """Build and connect the stores of ``resources`` (only those replay needs)."""
        for name in dict.fromkeys(resources):
            parts = build_parts(self._settings.resources[name], self._settings, self._env)
            store_pair(parts)
            self._parts[name] = parts
            for store in parts.stores.values():
                await store.open()
                self._opened.append(store)

    async def close(self) -> None:
        for store in reversed(self._opened):
            await store.close()
        self._opened.clear()

    def _read(self, case: Case) -> tuple[ResourceParts, Read | str]:
        parts = self._parts[case.request.target]
        return parts, parse_read(parts, case.request)

    async def replay(self, case: Case) -> Result:
        parts, read = self._read(case)
        if isinstance(read, str):
            return Result(case, Verdict.NOT_REPLAYABLE, read)
        if case.answer is not None:
            return await self._against_answer(case, parts, read, case.answer)
        primary, other = store_pair(parts)
        rules = _rules(parts, read)
        settings = parts.settings
        for attempt in range(settings.recheck_attempts + 1):
            if attempt:  # a write on its way is not a difference: read again, backing off
                await asyncio.sleep(settings.recheck_delay_seconds * 2 ** (attempt - 1))
            found = await self._both(parts, read, primary, other)
            if isinstance(found, Failure):
                return Result(case, Verdict.FAILING, found.detail, sides=found.sides)
            comparison = compare(found[0], found[1], rules)
            sides = _sides(primary, other, found)
            if comparison.outcome is Outcome.MATCH:
                detail = f"agreed on re-read {attempt}" if attempt else ""
                return Result(case, Verdict.FIXED, detail, sides=sides)
        shown = self._shown(comparison, primary, other)
        return Result(case, Verdict.STILL_DIFFERENT, comparison.detail, shown, sides)

    async def _both(
        self, parts: ResourceParts, read: Read, primary: str, other: str
    ) -> tuple[Any, Any] | Failure:
        """Both stores' values, or which store failed and how."""
        stores = parts.stores
        try:
            first, keys = await _primary_value(parts, read, stores[primary])
        except (StoreError, TimeoutError) as e:
            return Failure.of(primary, e)
        try:
            second = await _value(parts, read, stores[other], keys)
        except (StoreError, TimeoutError) as e:
            return Failure.of(other, e, {primary: _presence(first)})
        return first, second

    async def _against_answer(
        self, case: Case, parts: ResourceParts, read: Read, answer: Mapping[str, Any]
    ) -> Result:
        """A corpus case: each store's answer, redacted alike, against the recorded one."""
        rules = _rules(parts, read)
        recorded = answer.get("value")
        failures, differences, sides = [], [], {}
        for name in store_pair(parts):
            store = parts.stores[name]
            try:
                value, _ = await _primary_value(parts, read, store)
            except (StoreError, TimeoutError) as e:
                failures.append(Failure.of(name, e).detail)
                sides[name] = "error"
                continue
            now = plain(value, self._redactor)
            sides[name] = _presence(now)
            for d in compare(recorded, now, rules).differences:
                differences.append(
                    {"store": name, "path": d.path, "kind": d.kind,
                     "recorded": d.primary, "now": d.shadow}
                )  # fmt: skip
        if failures:
            return Result(case, Verdict.FAILING, "; ".join(failures), tuple(differences), sides)
        verdict = Verdict.STILL_DIFFERENT if differences else Verdict.FIXED
        return Result(case, verdict, "", tuple(differences), sides)

    async def answer(self, case: Case) -> tuple[dict[str, Any] | None, str]:
        """The primary store's answer now, redacted for a corpus; or None and why not."""
        parts, read = self._read(case)
        if isinstance(read, str):
            return None, read
        if self._redactor.is_sensitive(parts.schema.key) and read.operation == "get":
            return None, f"the key field {parts.schema.key!r} is sensitive: a corpus cannot keep it"
        primary, _ = store_pair(parts)
        try:
            value, _ = await _primary_value(parts, read, parts.stores[primary])
        except (StoreError, TimeoutError) as e:
            return None, Failure.of(primary, e).detail
        return {"store": primary, "value": plain(value, self._redactor)}, ""

    def _shown(
        self, comparison: Comparison, primary: str, other: str
    ) -> tuple[dict[str, Any], ...]:
        return tuple(
            {"path": d.path, "kind": d.kind, primary: d.primary, other: d.shadow}
            for d in map(self._redactor.difference, comparison.differences)
        )


def _rules(parts: ResourceParts, read: Read) -> Rules:
    return parts.record_rules if read.operation == "get" else parts.list_rules


def _json(parts: ResourceParts, record: Any, fields: Sequence[str] | None) -> Any:
    return None if record is None else parts.schema.to_json(record, fields=fields, drift=True)


def _items(parts: ResourceParts, records: Iterable[Any], fields: Sequence[str] | None) -> Any:
    return {"items": [parts.schema.to_json(r, fields=fields, drift=True) for r in records]}


async def _primary_value(parts: ResourceParts, read: Read, store: Store) -> tuple[Any, list[Any]]:
    """The read as this store serves it, and (for a list) the keys of its page."""
    if read.operation == "get":
        return _json(parts, await store.get(read.key, read.fields), read.fields), []
    if read.operation == "lookup":
        found = await store.query_index(read.index or "", read.value, read.limit)
        return _items(parts, found, read.fields), []
    records, _ = await store.list(read.filters, read.limit, None)
    return _items(parts, records, read.fields), [r[parts.schema.key] for r in records]


async def _value(parts: ResourceParts, read: Read, store: Store, keys: list[Any]) -> Any:
    """The other store's side: a list page is compared as the records of the primary's page,
    fetched by key and still matching the filters (pages differ between stores by nature)."""
    if read.operation != "list":
        value, _ = await _primary_value(parts, read, store)
        return value
    found = await store.batch_get(keys) if keys else []
    matching = [r for r in found if all(r.get(k) == v for k, v in read.filters.items())]
    return _items(parts, matching, read.fields)


def _presence(value: Any) -> str:
    if value is None:
        return "absent"
    if isinstance(value, dict) and isinstance(value.get("items"), list):
        return f"{len(value['items'])} items"
    return "found"


def _sides(primary: str, other: str, values: tuple[Any, Any]) -> dict[str, str]:
    return {primary: _presence(values[0]), other: _presence(values[1])}
