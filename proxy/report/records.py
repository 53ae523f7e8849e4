"""Reading mismatch records back from the sink ``serve`` writes them to: the JSON-lines file
with its rotated backups (oldest first), or the Redis stream from the window's start.

Records are yielded one at a time, so a 200 MiB file costs no more memory than a small one.
A line that is not a JSON object with a time is counted in ``SinkScan.malformed`` and skipped;
a sink that cannot be read at all is a ReportError."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.report.model import ReportError, Source, Window
from proxy.report.window import record_time
from proxy.settings import JsonlSink, RedisSink
from proxy.store import exactjson

PAGE = 1000


@dataclass
class SinkScan:
    """What a pass over the sink saw besides the records it yielded."""

    source: Source
    malformed: int = 0
    #: where the first malformed record is, and what is wrong with it
    first_malformed: str = ""
    warnings: list[str] = field(default_factory=list)

    def bad(self, where: str, why: str) -> None:
        self.malformed += 1
        if self.malformed == 1:
            self.first_malformed = f"{where}: {why}"


def open_sink(config: JsonlSink | RedisSink) -> SinkScan:
    if isinstance(config, JsonlSink):
        return SinkScan(Source("jsonl", config.path, True))
    return SinkScan(Source("redis", f"{_safe_url(config.url)} stream {config.stream}", True))


def records(config: JsonlSink | RedisSink, win: Window, scan: SinkScan) -> Iterator[dict[str, Any]]:
    """Every well-formed record whose time is inside ``win``, oldest first."""
    raw = _jsonl(config, scan) if isinstance(config, JsonlSink) else _redis(config, win, scan)
    for where, data in raw:
        record = _parse(data)
        if isinstance(record, str):
            scan.bad(where, record)
            continue
        at = record_time(record.get("time"))
        if at is None:
            scan.bad(where, "no valid 'time'")
        elif win.start <= at <= win.end + 1:  # +1: record times are whole seconds
            yield record


def _parse(data: bytes) -> dict[str, Any] | str:
    try:
        record = exactjson.loads(data)
    except (exactjson.JSONDecodeError, ValueError) as e:
        return f"not JSON: {e}"
    if not isinstance(record, dict):
        return "not a JSON object"
    if not isinstance(record.get("route"), str):
        return "no 'route'"
    return record


def jsonl_files(config: JsonlSink) -> list[Path]:
    """The file and its backups, oldest first (``.N`` … ``.1``, then the file itself)."""
    path = Path(config.path)
    backups = [path.with_name(f"{path.name}.{i}") for i in range(config.backups, 0, -1)]
    return [p for p in backups if p.exists()] + [path]


def _jsonl(config: JsonlSink, scan: SinkScan) -> Iterator[tuple[str, bytes]]:
    files = jsonl_files(config)
    if not files[-1].exists() and len(files) == 1:
        scan.warnings.append(
            f"the sink file {config.path} does not exist: no mismatch has been recorded there "
            "(run the report where the proxy runs, or set SHADOWPROXY__SINK__PATH)"
        )
        return
    for path in files:
        try:
            with path.open("rb") as f:
                for number, line in enumerate(f, 1):
                    if line.strip():
                        yield f"{path}:{number}", line
        except FileNotFoundError:
            continue  # rotated away while being read
        except OSError as e:
            why = e.strerror or e
            raise ReportError(f"cannot read the mismatch sink {str(path)!r}: {why}") from e


def _redis(config: RedisSink, win: Window, scan: SinkScan) -> Iterator[tuple[str, bytes]]:
    import redis

    client = redis.Redis.from_url(config.url, socket_timeout=5, socket_connect_timeout=5)
    # Stream ids start with the milliseconds the entry was added: start the range there.
    start = f"{int(win.start * 1000)}-0"
    try:
        while True:
            page: list[Any] = client.xrange(config.stream, min=start, max="+", count=PAGE) or []
            for raw_id, fields in page:
                entry = f"{config.stream} {_str(raw_id)}"
                data = (fields or {}).get(b"record")
                if not isinstance(data, bytes):
                    scan.bad(entry, "no 'record' field")
                    continue
                yield entry, data
            if len(page) < PAGE:
                return
            start = "(" + _str(page[-1][0])
    except redis.RedisError as e:
        where = scan.source.location
        raise ReportError(f"cannot read the mismatch sink (Redis {where}): {e}") from e
    finally:
        client.close()


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _safe_url(url: str) -> str:
    """The URL without a password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
