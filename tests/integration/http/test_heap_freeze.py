"""``shadowproxy serve`` freezes its start-up heap once it listens, so the garbage collector's
full collections stop walking it (``proxy.serve.freeze_start_up_heap``)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from proxy import cli, serve
from proxy.settings import settings_from_mapping
from tests.integration.http.conftest import UpstreamFactory

pytestmark = pytest.mark.integration


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """A test process with nothing frozen before and after: the freeze is process-wide."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def raw_config(upstream_url: str, tmp_path: Path) -> dict[str, Any]:
    return {
        "listen": {"port": 0},
        "admin": {"port": 0},
        "backends": {"primary": {"kind": "http", "url": upstream_url, "timeout_seconds": 5}},
        "routes": [{"name": "r", "path": "/*", "methods": ["*"], "primary": "primary"}],
        "sink": {"kind": "jsonl", "path": str(tmp_path / "mismatches.jsonl")},
        "flags": {"kind": "memory", "audit_path": str(tmp_path / "audit.jsonl")},
        "logging": {"access_log": False},
    }


@asynccontextmanager
async def serving(raw: dict[str, Any], **options: Any) -> AsyncIterator[tuple[str, int]]:
    """``serve`` in this loop until the caller is done: the proxy's URL and the number of
    objects frozen when it became ready."""
    stop = asyncio.Event()
    ready: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(
        serve.serve(
            settings_from_mapping(raw, env={}), stop=stop, on_ready=ready.set_result, **options
        )
    )
    try:
        urls = await asyncio.wait_for(asyncio.shield(ready), 30)
        yield urls[0], gc.get_freeze_count()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_serve_freezes_the_start_up_heap_and_still_answers(
    unfrozen: None, upstream_factory: UpstreamFactory, tmp_path: Path
) -> None:
    upstream = await upstream_factory()
    assert gc.get_freeze_count() == 0
    async with serving(raw_config(upstream.url, tmp_path), freeze_heap=True) as (url, frozen):
        # every module, class and config object made so far: tens of thousands
        assert frozen > 10_000
        async with aiohttp.ClientSession() as client, client.get(url + "/users/1") as r:
            assert r.status == 200
            assert await r.json() == {"id": 1, "name": "Ada"}


async def test_an_embedding_program_keeps_its_heap_as_it_is(
    unfrozen: None, upstream_factory: UpstreamFactory, tmp_path: Path
) -> None:
    upstream = await upstream_factory()
    async with serving(raw_config(upstream.url, tmp_path)) as (_url, frozen):
        assert frozen == 0


def test_the_serve_command_asks_for_the_freeze(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "proxy.yaml"
    config.write_text(yaml.safe_dump(raw_config("http://127.0.0.1:9", tmp_path)))
    seen: dict[str, Any] = {}

    async def recorded(settings: Any, **options: Any) -> None:
        seen.update(options)

    monkeypatch.setattr(serve, "serve", recorded)
    assert cli.main(["serve", "-c", str(config), "--workers", "1"]) == 0
    assert seen["freeze_heap"] is True
