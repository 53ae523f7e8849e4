"""Where a backfill remembers how far each segment got, so ``--resume`` goes on from there.

A checkpoint is a small JSON object per segment (the scan position after the last page
written, the counts, whether the segment finished), saved after every page that finished
in order. Two places: a directory of files (written to a temporary file and renamed, so a
kill mid-write leaves the previous checkpoint), or Redis (``redis://...``), which pods of a
Kubernetes Job share without a volume.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Protocol

import orjson

from proxy.errors import ConfigError

_SAFE = re.compile(r"[^A-Za-z0-9_.=-]+")


class Checkpoints(Protocol):
    async def load(self, name: str) -> dict[str, Any] | None: ...

    async def save(self, name: str, state: dict[str, Any]) -> None: ...

    async def clear(self, name: str) -> None: ...

    async def close(self) -> None: ...


class FileCheckpoints:
    """One JSON file per checkpoint; the (tiny) file work runs in a thread."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, name: str) -> Path:
        return self.directory / f"{_SAFE.sub('_', name)}.json"

    async def load(self, name: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self._load, self._path(name))

    async def save(self, name: str, state: dict[str, Any]) -> None:
        await asyncio.to_thread(self._save, self._path(name), orjson.dumps(state))

    async def clear(self, name: str) -> None:
        await asyncio.to_thread(self._path(name).unlink, missing_ok=True)

    async def close(self) -> None:
        return None

    @staticmethod
    def _load(path: Path) -> dict[str, Any] | None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            state = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise ConfigError(f"checkpoint {str(path)!r} is not JSON ({e}); remove it") from e
        if not isinstance(state, dict):
            raise ConfigError(f"checkpoint {str(path)!r} is not a JSON object; remove it")
        return state

    @staticmethod
    def _save(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class RedisCheckpoints:
    def __init__(self, url: str, prefix: str = "shadowproxy:checkpoint") -> None:
        from proxy.redis_client import redis_client

        self._redis = redis_client(url, timeout_seconds=5.0)
        self._prefix = prefix

    async def load(self, name: str) -> dict[str, Any] | None:
        raw = await self._redis.get(f"{self._prefix}:{name}")
        if raw is None:
            return None
        state = orjson.loads(raw)
        return state if isinstance(state, dict) else None

    async def save(self, name: str, state: dict[str, Any]) -> None:
        await self._redis.set(f"{self._prefix}:{name}", orjson.dumps(state))

    async def clear(self, name: str) -> None:
        await self._redis.delete(f"{self._prefix}:{name}")

    async def close(self) -> None:
        await self._redis.aclose()


def open_checkpoints(where: str) -> Checkpoints:
    """``redis://host:port/db`` (or ``rediss://``) or a directory path."""
    if where.startswith(("redis://", "rediss://", "unix://")):
        return RedisCheckpoints(where)
    return FileCheckpoints(Path(where))
