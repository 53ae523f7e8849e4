"""Scenarios f and g: the proxy's own process. SIGKILL in the middle of dual writes loses
nothing once ``reconcile`` has run (``verify`` finds no difference); SIGTERM under load lets
every request already on its way to the primary finish, and the process exits 0.

The fleet version of f (several instances, hot keys, writes held back so the kill lands
between the two stores) is tests/e2e/test_dual_write_integrity.py; this one is short and
runs against a deployment too (``--kill-command``/``--start-command``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import aiohttp
import pytest

from tests.faults.client import closed_loop, fetch, request_id
from tests.faults.relay import Mode
from tests.faults.store import new_user, put, reconcile_until_drained, verify_keys
from tests.faults.targets import HttpTarget, StoreTarget

CLIENTS = 16


@pytest.mark.needs("kill", "store_config")
async def test_sigkill_under_dual_writes_then_reconcile_verifies_clean(
    store_target: StoreTarget, http: aiohttp.ClientSession, pytestconfig: pytest.Config
) -> None:
    """f. Writes of fresh keys; at a third of them the proxy is SIGKILLed and started again.
    A write cut by the kill is not sent again (that would cover what the kill left): its
    key is only verified. The others all succeed."""
    target = store_target
    controller = target.controller
    assert controller is not None
    count = max(30, pytestconfig.getoption("fault_writes") // 4)
    kill_at = count // 3
    records = [new_user(f"sigkill-{i}") for i in range(count)]
    up = asyncio.Event()
    up.set()
    cut: list[str] = []

    async def one(i: int) -> str | None:
        if i == kill_at:
            up.clear()
            await asyncio.to_thread(controller.kill)
            await asyncio.to_thread(controller.start)
            up.set()
        await up.wait()
        try:
            status = await put(http, target, records[i])
        except (aiohttp.ClientError, TimeoutError):
            cut.append(records[i]["id"])  # its outcome is unknown: reconcile and verify tell
            await up.wait()
            return None
        return None if status in (200, 201) else f"PUT {records[i]['id']}: {status}"

    result = await closed_loop(count, CLIENTS, one)
    print(f"{count} writes, {len(cut)} cut by the kill")
    assert result.failures == [], f"{len(result.failures)} writes failed: {result.failures[:3]}"
    assert len(cut) < count // 2, "most writes were cut: the proxy did not come back"

    await asyncio.to_thread(reconcile_until_drained, target)
    verified = await asyncio.to_thread(verify_keys, target, [r["id"] for r in records], "kill")
    assert verified.returncode == 0, f"verify: {verified.stdout}{verified.stderr}"


@pytest.fixture
def restarted(http_target: HttpTarget) -> Iterator[None]:
    """The proxy running again (and the primary relay passing) after the scenario."""
    yield
    assert http_target.primary is not None and http_target.controller is not None
    http_target.primary.set(Mode.PASS)
    if http_target.local:
        if http_target.controller.pid() is None:
            http_target.controller.start()
    else:
        http_target.controller.start()


@pytest.mark.needs("stop", "primary")
async def test_sigterm_under_load_finishes_in_flight_requests_and_exits_0(
    http_target: HttpTarget, http: aiohttp.ClientSession, restarted: None
) -> None:
    """g. The primary's answers are held back (so requests are in flight when the signal
    comes); SIGTERM; every request the primary saw (the relay records its X-Request-ID) is
    answered in full, and the process exits 0. Requests refused once the port closed never
    reached the primary."""
    target = http_target
    relay, controller = target.primary, target.controller
    assert relay is not None and controller is not None and target.primary_direct is not None
    path = target.paths[0]
    expected, _ = await fetch(http, "GET", target.primary_direct + path)
    await asyncio.to_thread(relay.set, Mode.DELAY, delay=0.5)
    relay.clear_ids()
    answered: dict[str, tuple[float, object]] = {}
    refused: dict[str, str] = {}
    stopped = asyncio.Event()

    async def client() -> None:
        while not stopped.is_set():
            rid = request_id()
            try:
                answer, _ = await fetch(http, "GET", target.proxy_url + path, request_id=rid)
                answered[rid] = (time.monotonic(), answer)
            except (aiohttp.ClientError, TimeoutError) as e:
                refused[rid] = f"{type(e).__name__}: {e}"
                await asyncio.sleep(0.05)

    async def stop_under_load() -> tuple[float, int]:
        deadline = time.monotonic() + 120
        while len(relay.seen_ids()) < 2 * CLIENTS:
            assert time.monotonic() < deadline, "the load never reached the primary"
            await asyncio.sleep(0.05)
        signalled = time.monotonic()
        code = await asyncio.to_thread(controller.stop)
        stopped.set()
        return signalled, code

    clients = [asyncio.ensure_future(client()) for _ in range(CLIENTS)]
    signalled, code = await stop_under_load()
    await asyncio.wait_for(asyncio.gather(*clients), timeout=120)

    assert code == 0, f"the proxy exited {code} after SIGTERM"
    try:
        late, _ = await fetch(http, "GET", target.proxy_url + path)
    except (aiohttp.ClientError, TimeoutError):
        pass  # refused: the proxy is gone
    else:
        raise AssertionError(f"the proxy still answers after it exited: {late.describe()}")
    seen = relay.seen_ids()
    lost = {rid: refused[rid] for rid in seen if rid in refused}
    assert not lost, f"{len(lost)} requests the primary saw were not answered: {lost}"
    wrong = [a for _, a in answered.values() if a != expected]
    assert not wrong, f"{len(wrong)} answers were not the primary's, e.g. {wrong[0]}"
    finished_after = [rid for rid, (t, _) in answered.items() if t > signalled]
    print(f"{len(answered)} answered, {len(finished_after)} after SIGTERM, {len(refused)} refused")
    assert finished_after, "no request was in flight at SIGTERM: nothing was shown"
