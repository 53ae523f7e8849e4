"""``shadowproxy demo``: everything embedded, nothing to install or start first."""

from __future__ import annotations

import os
import secrets

from proxy.logs import configure_logging


async def run_demo(*, story: str, duration: float | None, requests: int, users: int) -> int:
    configure_logging("auto", "WARNING")
    token = os.environ.setdefault("SHADOWPROXY_ADMIN_TOKEN", secrets.token_urlsafe(16))
    os.environ.setdefault("SHADOWPROXY_REDACTION_KEY", secrets.token_hex(16))
    if story == "http":
        from proxy.demo.http_story import run_http_demo

        return await run_http_demo(duration=duration, requests=requests, token=token)
    from proxy.demo.store_story import run_store_demo

    return await run_store_demo(duration=duration, users=users, token=token)
