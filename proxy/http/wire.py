"""Byte-exact header pass-through.

aiohttp decodes header bytes as UTF-8 with ``surrogateescape`` but its serializer silently
drops surrogates, so a non-UTF-8 header value (legal in HTTP/1.1: obs-text) would be cut.
We keep aiohttp's C serializer for the common all-ASCII case and encode the rare other case
with ``surrogateescape``, which restores the original bytes. Control characters are refused
exactly as aiohttp refuses them (header injection).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import http_writer

_fast: Callable[[str, Any], bytes] = http_writer._serialize_headers
_safe: Callable[[str], str] = http_writer._safe_header


def _serialize_headers(status_line: str, headers: Any) -> bytes:
    for value in headers.values():
        if not value.isascii():
            break
    else:
        return _fast(status_line, headers)
    lines = "\r\n".join(_safe(k) + ": " + _safe(v) for k, v in headers.items())
    return (_safe(status_line) + "\r\n" + lines + "\r\n\r\n").encode("utf-8", "surrogateescape")


def install() -> None:
    """Idempotent; process-wide (aiohttp looks the serializer up at call time)."""
    http_writer._serialize_headers = _serialize_headers
