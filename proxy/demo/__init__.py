"""``shadowproxy demo``: everything embedded, nothing to install or start first."""

from __future__ import annotations

from proxy.demo.http_story import run_http_demo


async def run_demo(*, duration: float | None, requests: int) -> int:
    return await run_http_demo(duration=duration, requests=requests)
