"""Background tasks are spawned here and only here: referenced until done, failures logged."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("shadowproxy")

_running: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
    task = asyncio.create_task(coro, name=name)  # noqa: TID251 - this is the one helper
    _running.add(task)
    task.add_done_callback(_finished)
    return task


def _finished(task: asyncio.Task[Any]) -> None:
    _running.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error(
            "background task failed",
            exc_info=task.exception(),
            extra={"task": task.get_name()},
        )


async def cancel(*tasks: asyncio.Task[Any]) -> None:
    """Cancel ``tasks`` and wait until every one has ended. A client library can swallow a
    cancellation that arrives just as its own timeout fires (redis-py does:
    redis/redis-py#2551) and the task goes on; so cancel again until it ends."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            task.result()  # retrieved (failures were logged by _finished)
