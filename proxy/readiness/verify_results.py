"""Results of full-table verifies, kept where the proxy's flip gate can read them.

``shadowproxy verify`` saves one ``VerifyResult`` per run of a segment (``--segment i/N``; a
whole-table run is segment 0 of 1); the stop-old-writes gate asks ``clean_at``::

    results = open_verify_results(settings.readiness)
    await results.save(result)              # the verify command, after a whole segment
    at = await results.clean_at("users")    # the gate: when the table was last proven equal
    await results.close()

Where (``readiness.store``):

- ``redis``: one hash per resource, ``{prefix}:verify:{resource}``, one field per segment,
  ``"{total_segments}/{segment}"``, each a JSON ``VerifyResult.to_dict()``; no expiry. Every
  instance and every verify process sharing the prefix sees the same results.
- ``memory``: a JSON file, because a verify process and the proxy share no memory:
  ``readiness.verify_results_path``, by default ``.shadowproxy/verify-results.json`` under
  the current directory of each process (run verify where the proxy runs, or give an
  absolute path). It is rewritten whole through a temporary file and ``os.replace`` under
  an exclusive lock (``<path>.lock``), so a reader never sees half a file and two verify
  processes saving at once lose neither result.

``clean_at(resource)``: take ``N``, the ``total_segments`` of the result that finished last
(a run with another ``N`` makes older results of other splits irrelevant). When every
segment ``0..N-1`` has a result for that ``N`` and every one of them is clean, the answer is
the EARLIEST ``started_at`` among them, else ``None``. ``started_at``, not ``finished_at``:
a verify reads over minutes or hours, and a difference that existed when it started reading
is found unless it was repaired meanwhile; one made after it read a key is not. So the whole
table is proven equal as of the moment the oldest segment began reading, and the age the
gate judges is counted from there. Saving a segment again (a re-run) replaces its result.

A file or hash that cannot be read or holds something else than results raises
``VerifyResultsError`` naming the place and the problem; the gate reports it as an unknown
criterion with that message instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
from redis.exceptions import RedisError

from comparators.errors import ShadowProxyError
from proxy.readiness.config import ReadinessConfig
from proxy.redis_client import redis_client

DEFAULT_STATE_DIR = Path(".shadowproxy")
RESULTS_FILE = "verify-results.json"
FILE_FORMAT = 1

_STRINGS = ("resource", "source", "target")
_COUNTS = ("source_records", "target_records", "missing", "extra", "differing")
_TIMES = ("started_at", "finished_at")


class VerifyResultsError(ShadowProxyError, ValueError):
    """Verify results could not be read or saved, or a result is malformed; the message
    names where and why."""


@dataclass(frozen=True)
class VerifyResult:
    """One finished verify of one segment (``segment`` of ``total_segments``; 0 of 1 for the
    whole table) of ``resource``: ``source`` was walked, ``target`` is the other store.
    ``missing``: keys in the source only; ``extra``: in the target only; ``differing``: in
    both with different records. Times are seconds since the epoch."""

    resource: str
    source: str
    target: str
    segment: int
    total_segments: int
    started_at: float
    finished_at: float
    source_records: int
    target_records: int
    missing: int
    extra: int
    differing: int

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem:
            raise VerifyResultsError(f"invalid verify result: {problem}")

    @property
    def clean(self) -> bool:
        return self.missing == self.extra == self.differing == 0

    @property
    def field(self) -> str:
        """``"{total_segments}/{segment}"``: where this result is kept."""
        return f"{self.total_segments}/{self.segment}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VerifyResult:
        """Raises VerifyResultsError naming the first missing or mistyped field."""
        if not isinstance(d, Mapping):
            raise VerifyResultsError(f"a verify result must be an object, got {type(d).__name__}")
        for name in (*_STRINGS, "segment", "total_segments", *_COUNTS, *_TIMES):
            if name not in d:
                raise VerifyResultsError(f"a verify result lacks {name!r}")
        for name in _STRINGS:
            if not isinstance(d[name], str):
                raise VerifyResultsError(f"verify result {name!r} must be a string: {d[name]!r}")
        for name in ("segment", "total_segments", *_COUNTS):
            if not isinstance(d[name], int) or isinstance(d[name], bool):
                raise VerifyResultsError(f"verify result {name!r} must be an integer: {d[name]!r}")
        for name in _TIMES:
            value = d[name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise VerifyResultsError(f"verify result {name!r} must be a number: {value!r}")
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in names})  # newer fields: ignored


def _problem(r: VerifyResult) -> str:
    if not r.resource:
        return "resource is empty"
    if r.total_segments < 1 or not 0 <= r.segment < r.total_segments:
        return f"segment {r.segment} of {r.total_segments}: need 0 <= segment < total_segments"
    negative = [name for name in _COUNTS if getattr(r, name) < 0]
    if negative:
        return f"{negative[0]} is negative ({getattr(r, negative[0])})"
    if not (math.isfinite(r.started_at) and math.isfinite(r.finished_at)):
        return "started_at and finished_at must be finite"
    if r.finished_at < r.started_at:
        return f"finished_at {r.finished_at} is before started_at {r.started_at}"
    return ""


# --- what every backend answers the same way ----------------------------------------------


def latest(results: Sequence[VerifyResult]) -> list[VerifyResult]:
    """The results of the split used last: those whose ``total_segments`` is that of the
    result that finished last, ordered by segment."""
    if not results:
        return []
    newest = max(results, key=lambda r: (r.finished_at, r.started_at))
    return sorted(
        (r for r in results if r.total_segments == newest.total_segments), key=lambda r: r.segment
    )


def clean_since(last: Sequence[VerifyResult]) -> float | None:
    """``clean_at`` over the output of ``latest`` (see the module docstring)."""
    if not last:
        return None
    total = last[0].total_segments
    if {r.segment for r in last} != set(range(total)) or not all(r.clean for r in last):
        return None
    return min(r.started_at for r in last)


def explain(last: Sequence[VerifyResult]) -> str:
    """Why ``clean_since(last)`` is what it is, in one line (for the gate's criterion)."""
    if not last:
        return "no full-table verify has been saved: run shadowproxy verify"
    total = last[0].total_segments
    dirty = [r for r in last if not r.clean]
    if dirty:
        shown = "; ".join(
            f"segment {r.segment}/{r.total_segments} ({r.source} vs {r.target}): "
            f"{r.missing} missing, {r.extra} extra, {r.differing} differing"
            for r in dirty[:3]
        )
        more = f" and {len(dirty) - 3} more segments" if len(dirty) > 3 else ""
        return f"the latest verify found differences: {shown}{more}"
    absent = sorted(set(range(total)) - {r.segment for r in last})
    if absent:
        listed = ", ".join(map(str, absent[:10])) + (" ..." if len(absent) > 10 else "")
        return f"the latest verify split in {total} segments has no result for segment {listed}"
    return f"clean: {total} segment(s), {sum(r.source_records for r in last)} records"


class VerifyResults(Protocol):
    async def save(self, result: VerifyResult) -> None:
        """Keep ``result`` as its segment's latest (replacing an earlier run of it)."""

    async def last(self, resource: str) -> list[VerifyResult]:
        """The latest result per segment of the split used last (see ``latest``)."""

    async def clean_at(self, resource: str) -> float | None:
        """When ``resource`` was last proven equal in full, or None (module docstring)."""

    async def close(self) -> None: ...


# --- a file -------------------------------------------------------------------------------


class FileVerifyResults:
    """``{"format": 1, "results": {resource: {"N/i": result}}}`` in one JSON file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    async def save(self, result: VerifyResult) -> None:
        await asyncio.to_thread(self._save, result)

    async def last(self, resource: str) -> list[VerifyResult]:
        stored = await asyncio.to_thread(self._read)
        return latest(list(stored.get(resource, {}).values()))

    async def clean_at(self, resource: str) -> float | None:
        return clean_since(await self.last(resource))

    async def close(self) -> None:
        return None

    def _save(self, result: VerifyResult) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._locked():
                stored = self._read()
                stored.setdefault(result.resource, {})[result.field] = result
                self._write(stored)
        except OSError as e:
            raise VerifyResultsError(f"cannot save verify results to {self._where}: {e}") from e

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released on close
            yield
        finally:
            os.close(fd)

    def _write(self, stored: Mapping[str, Mapping[str, VerifyResult]]) -> None:
        doc = {
            "format": FILE_FORMAT,
            "results": {
                name: {f: r.to_dict() for f, r in sorted(fields.items())}
                for name, fields in sorted(stored.items())
            },
        }
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".verify-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 would hide it from other users
                f.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @property
    def _where(self) -> str:
        return str(self.path.absolute())

    def _read(self) -> dict[str, dict[str, VerifyResult]]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise VerifyResultsError(f"cannot read verify results {self._where}: {e}") from e
        try:
            return _parse_file(orjson.loads(raw))
        except (orjson.JSONDecodeError, VerifyResultsError) as e:
            raise VerifyResultsError(
                f"verify results file {self._where} is not valid ({e}); fix or remove it and "
                "run shadowproxy verify again"
            ) from e


def _parse_file(doc: Any) -> dict[str, dict[str, VerifyResult]]:
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), dict):
        raise VerifyResultsError('expected an object with a "results" object')
    if doc.get("format") != FILE_FORMAT:
        raise VerifyResultsError(f"unknown format {doc.get('format')!r} (expected {FILE_FORMAT})")
    out: dict[str, dict[str, VerifyResult]] = {}
    for resource, fields in doc["results"].items():
        if not isinstance(fields, dict):
            raise VerifyResultsError(f"results of {resource!r} must be an object")
        out[resource] = {f: _checked(resource, f, v) for f, v in fields.items()}
    return out


def _checked(resource: str, field: str, value: Any) -> VerifyResult:
    try:
        result = VerifyResult.from_dict(value)
    except VerifyResultsError as e:
        raise VerifyResultsError(f"{resource} {field}: {e}") from e
    if result.resource != resource or result.field != field:
        raise VerifyResultsError(
            f"{resource} {field}: holds the result of {result.resource} {result.field}"
        )
    return result


# --- Redis --------------------------------------------------------------------------------


class RedisVerifyResults:
    """One hash per resource (module docstring). ``close()`` closes the client."""

    def __init__(self, url: str, *, prefix: str, timeout_seconds: float = 1.0) -> None:
        self._redis = redis_client(url, timeout_seconds)
        self.prefix = prefix
        self._url = url

    def key(self, resource: str) -> str:
        return f"{self.prefix}:verify:{resource}"

    async def save(self, result: VerifyResult) -> None:
        value = orjson.dumps(result.to_dict())
        try:
            await self._redis.hset(self.key(result.resource), result.field, value)
        except RedisError as e:
            raise VerifyResultsError(
                f"cannot save the verify result to Redis {self._url} "
                f"({self.key(result.resource)}): {type(e).__name__}: {e}"
            ) from e

    async def last(self, resource: str) -> list[VerifyResult]:
        key = self.key(resource)
        try:
            stored: dict[bytes | str, bytes | str] = await self._redis.hgetall(key)
        except RedisError as e:
            raise VerifyResultsError(
                f"cannot read verify results from Redis {self._url} ({key}): "
                f"{type(e).__name__}: {e}"
            ) from e
        results = []
        for raw_field, raw in stored.items():
            field = _text(raw_field)
            try:
                results.append(_checked(resource, field, orjson.loads(raw)))
            except (orjson.JSONDecodeError, VerifyResultsError) as e:
                raise VerifyResultsError(
                    f"Redis {key} field {field!r} is not a verify result ({e}); delete the "
                    "field and run shadowproxy verify again"
                ) from e
        return latest(results)

    async def clean_at(self, resource: str) -> float | None:
        return clean_since(await self.last(resource))

    async def close(self) -> None:
        await self._redis.aclose()


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def results_path(config: ReadinessConfig, state_dir: Path | None = None) -> Path:
    """``readiness.verify_results_path`` when set, else ``verify-results.json`` in
    ``state_dir`` (default ``.shadowproxy``); relative paths are under the current directory."""
    if config.verify_results_path is not None:
        return Path(config.verify_results_path)
    return (DEFAULT_STATE_DIR if state_dir is None else state_dir) / RESULTS_FILE


def open_verify_results(config: ReadinessConfig, *, state_dir: Path | None = None) -> VerifyResults:
    """Redis under ``readiness.prefix`` with ``readiness.store: redis``, else the file."""
    if config.store == "redis":
        return RedisVerifyResults(
            config.redis_url, prefix=config.prefix, timeout_seconds=config.timeout_seconds
        )
    return FileVerifyResults(results_path(config, state_dir))
