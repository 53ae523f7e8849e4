"""The project's vocabulary for aiohttp handlers: aliases only, no behaviour."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
"""A handler of an ``aiohttp`` application (routed, with ``match_info``)."""

RawHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
"""A handler of the bare server (``web.Server``), the HTTP drop-in's direct path."""
