"""Running the service: one process, or N worker processes sharing the ports."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import CollectorRegistry

from proxy.app import Apps, build
from proxy.client_timeouts import ClientTimeouts, WatchedSite, tracked
from proxy.metrics import Metrics
from proxy.settings import Settings, _Port

log = logging.getLogger("shadowproxy")


async def serve(
    settings: Settings,
    *,
    reuse_port: bool = False,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[list[str]], Awaitable[None] | None] | None = None,
    freeze_heap: bool = False,
) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop``), then shut down gracefully:
    stop accepting, finish in-flight requests, drain shadow work, flush the sink.

    ``freeze_heap``: once listening, move everything start-up made out of the garbage
    collector's sight (``freeze_start_up_heap``). Only the owner of the process should ask:
    ``shadowproxy serve`` does, an embedding program decides for itself."""
    apps = build(settings, registry=CollectorRegistry())
    async with (
        proxy_runner(apps, settings.listen.idle_timeout_seconds) as proxy,
        admin_runner(apps, settings.admin.idle_timeout_seconds) as admin,
    ):
        await _serve_until_stopped(
            settings, apps.metrics, proxy, admin, reuse_port, stop, on_ready, freeze_heap
        )


def freeze_start_up_heap() -> int:
    """Collect once, then freeze what is left (``gc.freeze``); the number of objects frozen.

    Start-up leaves ~85,000 tracked objects (modules, classes, config, the apps) that live as
    long as the process. CPython's full collection walks all of them, and it runs whenever the
    objects promoted since the last one exceed a quarter of those: under load every ~2 s. On a
    2-core VM a full collection took 36-40 ms idle and 47-61 ms under load, and every request
    in flight waited: in store mode at shadow 0% the proxy's p99 was 39-50 ms against a p50 of
    6-9 ms (``tests/benchmarks/store_proxy.py``). Frozen objects are never scanned again, so the
    full collections left cover only what was made since, and none took over 2 ms in the same
    run. The cost: a reference cycle among frozen objects is never collected; start-up's
    objects are not garbage, and the collect before the freeze takes what is."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


@asynccontextmanager
async def proxy_runner(
    apps: Apps, idle_timeout: float = 75.0, *, shutdown_timeout: float = 30
) -> AsyncIterator[web.BaseRunner]:
    """The proxy listener. With HTTP routes only, requests go straight to the forwarding
    handler (no URL dispatcher: it costs several percent of the CPU per request); the
    application still owns the lifecycle (pools, shadow drain, sink flush)."""
    if apps.direct_handler is None:
        runner: web.BaseRunner = web.AppRunner(
            apps.proxy,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=shutdown_timeout,
            keepalive_timeout=_backstop(idle_timeout),
        )
        await runner.setup()
        try:
            yield runner
        finally:
            await runner.cleanup()
        return
    app = apps.proxy
    app.freeze()
    await app.startup()
    try:
        server = web.Server(
            tracked(apps.direct_handler),
            access_log=None,
            keepalive_timeout=_backstop(idle_timeout),
        )
        runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=shutdown_timeout)
        await runner.setup()
        try:
            yield runner
        finally:
            await runner.cleanup()  # stop accepting, finish in-flight requests
    finally:
        await app.shutdown()
        await app.cleanup()  # drain shadow work, flush the sink, close pools


@asynccontextmanager
async def admin_runner(apps: Apps, idle_timeout: float = 75.0) -> AsyncIterator[web.BaseRunner]:
    runner = web.AppRunner(
        apps.admin,
        handle_signals=False,
        access_log=None,
        keepalive_timeout=_backstop(idle_timeout),
    )
    await runner.setup()
    try:
        yield runner
    finally:
        await runner.cleanup()


def _backstop(idle_timeout: float) -> float:
    """aiohttp's own idle timer, behind ours (``client_timeouts``, which counts its cuts)."""
    return 2 * idle_timeout + 1


def site(
    runner: web.BaseRunner,
    port: _Port,
    number: int,
    *,
    name: str,
    metrics: Metrics,
    reuse_port: bool = False,
    backlog: int = 128,
) -> WatchedSite:
    """A listener on ``port``'s host and ``number`` with its client timeouts."""
    timeouts = ClientTimeouts(
        port.header_timeout_seconds, port.body_timeout_seconds, port.idle_timeout_seconds
    )
    return WatchedSite(
        runner,
        port.host,
        number,
        timeouts=timeouts,
        on_cut=lambda phase: metrics.client_timeouts.labels(name, phase).inc(),
        reuse_port=reuse_port,
        backlog=backlog,
    )


async def listen(
    settings: Settings,
    metrics: Metrics,
    proxy_runner: web.BaseRunner,
    admin_runner: web.BaseRunner,
    *,
    reuse_port: bool = False,
) -> list[str]:
    """Open the proxy and admin ports (client timeouts on both); their URLs, proxy first."""
    listen, admin = settings.listen, settings.admin
    await site(
        proxy_runner,
        listen,
        listen.port,
        name="proxy",
        metrics=metrics,
        reuse_port=reuse_port,
        backlog=1024,
    ).start()
    await site(
        admin_runner, admin, admin.port, name="admin", metrics=metrics, reuse_port=reuse_port
    ).start()
    return [_url(a) for a in proxy_runner.addresses] + [_url(a) for a in admin_runner.addresses]


async def _serve_until_stopped(
    settings: Settings,
    metrics: Metrics,
    proxy_runner: web.BaseRunner,
    admin_runner: web.BaseRunner,
    reuse_port: bool,
    stop: asyncio.Event | None,
    on_ready: Callable[[list[str]], Awaitable[None] | None] | None,
    freeze_heap: bool,
) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        urls = await listen(settings, metrics, proxy_runner, admin_runner, reuse_port=reuse_port)
        if freeze_heap:
            freeze_start_up_heap()
        log.info("serving", extra={"proxy": urls[0], "admin": urls[-1], "pid": os.getpid()})
        if on_ready is not None:
            result = on_ready(urls)
            if result is not None:
                await result
        await stop.wait()
        log.info("shutting down", extra={"pid": os.getpid()})
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _url(address: object) -> str:
    host, port = address[:2]  # type: ignore[index]
    return f"http://{host}:{port}"


def run_workers(config_path: str, workers: int) -> int:
    """Start ``workers`` processes on the same ports (SO_REUSEPORT), forward SIGTERM/SIGINT,
    and aggregate their metrics through prometheus-client's multiprocess mode."""
    metrics_dir = tempfile.mkdtemp(prefix="shadowproxy-metrics-")
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=metrics_dir, SHADOWPROXY_WORKER="1")
    env.setdefault("SHADOWPROXY_REDACTION_KEY", secrets.token_hex(32))
    cmd = [sys.executable, "-m", "proxy", "serve", "-c", config_path, "--workers", "1"]
    children = [
        subprocess.Popen(cmd, env={**env, "SHADOWPROXY_WORKER_INDEX": str(i)})
        for i in range(workers)
    ]

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    try:
        remaining = list(children)
        while remaining:
            for child in list(remaining):
                rc = child.poll()
                if rc is None:
                    continue
                remaining.remove(child)
                if rc != 0:
                    code = code or rc
                    forward(signal.SIGTERM, None)
            if remaining:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    remaining[0].wait(timeout=0.5)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return code
