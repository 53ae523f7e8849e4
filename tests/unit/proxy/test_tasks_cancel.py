"""``tasks.cancel`` ends a task even when it swallows a cancellation (as redis-py can)."""

from __future__ import annotations

import asyncio

from proxy.tasks import cancel, spawn


async def test_a_swallowed_cancellation_is_sent_again() -> None:
    swallowed = 0

    async def poll_loop() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed == 0:  # as redis-py may, when its own timeout fires at once
                    swallowed += 1
                    continue
                raise

    task = spawn(poll_loop(), name="poll")
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel(task), timeout=10)
    assert task.cancelled() and swallowed == 1


async def test_a_finished_task_is_left_as_it_is() -> None:
    async def done() -> None:
        return None

    task = spawn(done(), name="done")
    await task
    await cancel(task)
    assert task.done() and not task.cancelled()
