"""Where replay finds mismatch records: the sink the config names (the JSON-lines file with
its rotated backups, or the Redis stream), a file of records (JSON lines, a JSON list, or
the ``GET /mismatches`` answer), or the examples of a ``shadowproxy report --format json``
(docs/report.schema.json). The newest ``limit`` records that ``keep`` accepts are kept;
a line that is not a record is counted and skipped, never guessed at."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.errors import ConfigError
from proxy.settings import JsonlSink, RedisSink, Settings
from proxy.store import exactjson

Record = dict[str, Any]
Keep = Callable[[Record], bool]
SHOWN_MALFORMED = 5
REQUIRED = ("route", "method", "path")


@dataclass
class Loaded:
    source: str
    records: list[Record] = field(default_factory=list)
    malformed: int = 0
    examples: list[str] = field(default_factory=list)
    """The first few malformed lines: where, and what is wrong (never their content)."""

    def bad(self, where: str, why: str) -> None:
        self.malformed += 1
        if len(self.examples) < SHOWN_MALFORMED:
            self.examples.append(f"{where}: {why}")


def _check(value: Any) -> str | None:
    """What keeps ``value`` from being a mismatch record, or None."""
    if not isinstance(value, dict):
        return f"not a JSON object but {type(value).__name__}"
    missing = [k for k in REQUIRED if not isinstance(value.get(k), str)]
    if missing:
        return f"not a mismatch record (no {', '.join(missing)})"
    return None


def _collect(loaded: Loaded, items: Iterable[tuple[str, Any]], keep: Keep, limit: int) -> None:
    newest: collections.deque[Record] = collections.deque(maxlen=limit)
    for where, value in items:
        why = _check(value)
        if why is not None:
            loaded.bad(where, why)
        elif keep(value):
            newest.append(value)
    loaded.records = list(newest)


def _lines(path: Path, loaded: Loaded) -> Iterator[tuple[str, Any]]:
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            line = raw.strip()
            if not line:
                continue
            try:
                yield f"{path.name} line {number}", exactjson.loads(line)
            except exactjson.JSONDecodeError:
                loaded.bad(f"{path.name} line {number}", "not JSON")


def sink_files(config: JsonlSink) -> list[Path]:
    """The sink's file and its rotated backups that exist, oldest first."""
    path = Path(config.path)
    backups = [path.with_name(f"{path.name}.{i}") for i in range(config.backups, 0, -1)]
    return [p for p in (*backups, path) if p.is_file()]


def from_sink(settings: Settings, *, keep: Keep, limit: int) -> Loaded:
    sink = settings.sink
    if isinstance(sink, JsonlSink):
        files = sink_files(sink)
        if not files:
            raise ConfigError(
                f"sink.path = {sink.path!r}: no such file (nothing recorded yet, or the sink "
                "is elsewhere; --records FILE reads a copy)"
            )
        loaded = Loaded(source=", ".join(str(p) for p in files))

        def items() -> Iterator[tuple[str, Any]]:
            for path in files:
                yield from _lines(path, loaded)

        _collect(loaded, items(), keep, limit)
        return loaded
    return _from_stream(sink, keep=keep, limit=limit)


def _from_stream(sink: RedisSink, *, keep: Keep, limit: int) -> Loaded:
    import redis
    from redis.exceptions import RedisError

    stream = sink.stream
    loaded = Loaded(source=f"redis stream {stream}")
    client = redis.Redis.from_url(sink.url, socket_timeout=5)
    try:
        entries = client.xrange(stream) or []
    except RedisError as e:  # the URL may hold a password: not shown
        raise ConfigError(f"sink.stream = {stream!r}: cannot read it: {type(e).__name__}") from e
    finally:
        client.close()

    def items() -> Iterator[tuple[str, Any]]:
        for entry_id, fields in entries:
            where = f"stream entry {entry_id!s}"
            try:
                yield where, exactjson.loads((fields or {}).get(b"record") or b"")
            except exactjson.JSONDecodeError:
                loaded.bad(where, "not JSON")

    _collect(loaded, items(), keep, limit)
    return loaded


def from_file(path: Path, *, keep: Keep, limit: int) -> Loaded:
    """JSON lines of records; or one JSON document: a list of records, or ``GET
    /mismatches``'s ``{"count": N, "mismatches": [...]}``."""
    try:
        text = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"--records {str(path)!r}: {e.strerror or e}") from e
    loaded = Loaded(source=str(path))
    document = _document(text)
    if document is not None:
        items = ((f"{path.name} item {i}", v) for i, v in enumerate(document, 1))
        _collect(loaded, items, keep, limit)
    else:
        _collect(loaded, _lines(path, loaded), keep, limit)
    return loaded


def _document(text: bytes) -> list[Any] | None:
    start = text.lstrip()[:1]
    if start not in (b"[", b"{"):
        return None
    try:
        value = exactjson.loads(text)
    except exactjson.JSONDecodeError:
        return None  # JSON lines, or damaged: read line by line
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and isinstance(value.get("mismatches"), list):
        return list(value["mismatches"])
    return None  # one record on one line: JSON lines


REPORT_FORMAT = ("shadowproxy-report", 1)


def from_report(path: Path, *, keep: Keep, limit: int) -> Loaded:
    """The examples of a JSON report (``targets[].examples[]``) as records of their target."""
    try:
        report = exactjson.loads(path.read_bytes())
    except OSError as e:
        raise ConfigError(f"--report {str(path)!r}: {e.strerror or e}") from e
    except exactjson.JSONDecodeError as e:
        raise ConfigError(f"--report {str(path)!r}: not JSON ({e})") from e
    found = (report.get("format"), report.get("format_version")) if isinstance(report, dict) else ()
    if found != REPORT_FORMAT:
        raise ConfigError(
            f"--report {str(path)!r}: not a shadowproxy report of format_version 1 "
            "('shadowproxy report --format json' writes one)"
        )
    loaded = Loaded(source=str(path))
    _collect(loaded, _examples(path, report.get("targets")), keep, limit)
    return loaded


def _examples(path: Path, targets: Any) -> Iterator[tuple[str, Any]]:
    for t, target in enumerate(targets if isinstance(targets, list) else [], 1):
        if not isinstance(target, dict) or not isinstance(target.get("examples"), list):
            yield f"{path.name} target {t}", None
            continue
        name = target.get("name")
        where = {"resource": name} if target.get("kind") == "resource" else {}
        for e, example in enumerate(target["examples"], 1):
            record = {"route": name, **where, **example} if isinstance(example, dict) else example
            yield f"{path.name} target {t} example {e}", record
