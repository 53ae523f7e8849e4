"""A real Prometheus (the ``prometheus`` binary) on a free loopback port, with its storage in
a temporary directory, and its HTTP API.

    async with running_prometheus(config, tmp_path) as prom:
        error, series = await prom.query(session, "up")

Stopped by its PID (SIGTERM, then SIGKILL if it does not exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.support.servers import free_port

BINARY = shutil.which("prometheus")


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    async def api(self, session: aiohttp.ClientSession, path: str, **params: str) -> Any:
        """``data`` of a successful ``/api/v1/...`` answer; raises with Prometheus's error."""
        async with session.get(f"{self.url}/api/v1/{path}", params=params) as r:
            body = await r.json()
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    async def query(
        self, session: aiohttp.ClientSession, expr: str
    ) -> tuple[str | None, list[dict[str, Any]]]:
        """``(error, series)`` of an instant query: the error Prometheus gives for an invalid
        expression (None when valid), and the result vector."""
        try:
            data = await self.api(session, "query", query=expr)
        except PrometheusError as e:
            return str(e), []
        result = data["result"]
        return None, result if data["resultType"] == "vector" else [{"value": result}]

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


class PrometheusError(AssertionError):
    pass


@contextlib.asynccontextmanager
async def running_prometheus(
    config: dict[str, Any], directory: Path, *, timeout: float = 60.0
) -> AsyncIterator[Prometheus]:
    assert BINARY is not None, "no prometheus binary (scripts/services.sh installs it)"
    prometheus = _start(BINARY, config, directory)
    try:
        await _ready(prometheus, timeout)
        yield prometheus
    finally:
        _stop(prometheus.process)


def _start(binary: str, config: dict[str, Any], directory: Path) -> Prometheus:
    config_path = directory / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log = directory / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=directory,
        )
    return Prometheus(f"http://127.0.0.1:{port}", process, log)


async def _ready(prometheus: Prometheus, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            if prometheus.process.poll() is not None:
                raise AssertionError(f"prometheus exited: {prometheus.logs()}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(prometheus.url + "/-/ready") as r:
                    if r.status == 200:
                        return
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus not ready in {timeout}s: {prometheus.logs()}")
            await asyncio.sleep(0.2)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
