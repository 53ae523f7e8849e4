"""Admin endpoints for flags and readiness (all behind the admin token):

GET /flags                      every flag, its value, the store's health
PUT /flags/{target.flag}        {"value": ..., "reason": "...", "force": false}
GET /flags/history?limit=&target=
GET /readiness?target=          verdicts with every criterion, measured vs threshold:
                                "verdicts" to flip reads (``ready``: all of them), and per
                                resource "stop_old_writes" (``ready_to_stop_old_writes``)
"""

from __future__ import annotations

import dataclasses
import getpass
from typing import Any

import orjson
from aiohttp import web

from proxy.control.decisions import Decisions
from proxy.errors import BadRequest, Conflict, HTTPProblem, NotFound, Unavailable, Unprocessable
from proxy.flags import FlagError, UnknownFlag, UnsafeFlip, parse_name
from proxy.flags.store import FlagConflict, FlagStore, FlagStoreError
from proxy.readiness import render_text, to_dict

ACTOR_HEADER = "X-Shadowproxy-Actor"


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body, default=str), status=status, content_type="application/json"
    )


def _actor(request: web.Request) -> str:
    """The CLI names its user (``cli:<user>``); anything else calling with the token is the
    admin API. The token itself never appears in the audit."""
    claimed = request.headers.get(ACTOR_HEADER, "")
    if claimed.startswith("cli:") and 4 < len(claimed) <= 64 and claimed.isprintable():
        return claimed
    return "admin:token"


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


class FlagsAdmin:
    def __init__(self, store: FlagStore, decisions: Decisions, *, writable: str | None) -> None:
        self.store = store
        self.decisions = decisions
        self._read_only_reason = writable

    async def show(self, request: web.Request) -> web.Response:
        snapshot = self.store.snapshot()
        return _json(
            {
                "version": snapshot.version,
                "flags": snapshot.flat(),
                "store": {"healthy": self.store.healthy, "last_error": self.store.last_error},
            }
        )

    async def set(self, request: web.Request) -> web.Response:
        if self._read_only_reason:
            raise Conflict(self._read_only_reason)
        try:
            target, flag = parse_name(request.match_info["name"])
        except FlagError as e:
            raise NotFound(str(e)) from e
        body = await _body(request)
        reason = body.get("reason")
        force = body.get("force", False)
        if not isinstance(reason, str) or not reason.strip():
            raise Unprocessable('"reason" is required: say why, the audit keeps it')
        if not isinstance(force, bool):
            raise BadRequest('"force" must be true or false')
        if "value" not in body:
            raise BadRequest('"value" is required')
        try:
            entry = await self.store.set(
                target, flag, body["value"], actor=_actor(request), reason=reason,
                force=force, check=self.decisions.check_flip,
            )  # fmt: skip
        except UnknownFlag as e:
            raise NotFound(str(e)) from e
        except UnsafeFlip as e:
            raise Conflict(str(e)) from e
        except FlagError as e:
            raise Unprocessable(str(e)) from e
        except FlagConflict as e:
            raise Conflict(str(e)) from e
        except FlagStoreError as e:
            raise Unavailable(f"the flag store is unavailable, nothing was changed: {e}") from e
        return _json({"changed": dataclasses.asdict(entry)})

    async def history(self, request: web.Request) -> web.Response:
        raw = request.query.get("limit", "50")
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 1000:
            raise BadRequest(f"limit must be an integer from 1 to 1000, got {raw!r}")
        entries = await self.store.history(int(raw), request.query.get("target"))
        return _json({"history": [dataclasses.asdict(e) for e in entries]})

    async def readiness(self, request: web.Request) -> web.Response:
        wanted = request.query.get("target")
        names = [wanted] if wanted else sorted(self.decisions.targets)
        unknown = [n for n in names if n not in self.decisions.targets]
        if unknown:
            raise NotFound(f"no shadowed resource or route named {unknown[0]!r}")
        verdicts, writes = [], []
        for name in names:
            result = await self.decisions.verdict(name)
            verdicts.append({**to_dict(result), "text": render_text(result)})
            if self.decisions.targets[name].kind == "resource":
                stop = await self.decisions.write_verdict(name)
                writes.append({**to_dict(stop), "text": render_text(stop)})
        return _json(
            {
                "ready": all(v["ready"] for v in verdicts),
                "ready_to_stop_old_writes": bool(writes) and all(w["ready"] for w in writes),
                "verdicts": verdicts,
                "stop_old_writes": writes,
            }
        )


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"malformed JSON: {e}") from e
    if not isinstance(body, dict):
        raise BadRequest("expected a JSON object")
    unknown = sorted(set(body) - {"value", "reason", "force"})
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}")
    return body


__all__ = ["ACTOR_HEADER", "FlagsAdmin", "HTTPProblem", "cli_actor"]
