"""The regression corpus: JSON lines, a header line then one case per line (docs/replay.md).

    {"shadowproxy_corpus": 1, "created_at": "...", "key_check": "redacted:..."}
    {"id": "...", "kind": "http", "route": "users-get", "method": "GET", "path": "/users/7",
     "requester": null, "records": 3, "request_ids": [...],
     "answer": {"status": 200, "headers": [["content-type", "application/json"]], "json": {...}}}
    {"id": "...", "kind": "store", "resource": "users", "operation": "get", "method": "GET",
     "path": "/users/7", ..., "answer": {"store": "postgres", "value": {...} | null}}

Everything in it is redacted as mismatch records are: sensitive values are keyed hashes, so
a live answer compares with a recorded one only under the same redaction key; ``key_check``
(the hash of a fixed text) tells whether it is the same key without revealing it.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from comparators import Redactor
from proxy.errors import ConfigError
from proxy.replay.model import Case, Request
from proxy.replay.records import Loaded
from proxy.store import exactjson

VERSION = 1
HEADER = "shadowproxy_corpus"
KEY_CHECK_TEXT = "shadowproxy corpus key check"


def key_check(redactor: Redactor) -> str:
    return redactor.value(KEY_CHECK_TEXT)


def case_line(case: Case, answer: dict[str, Any]) -> dict[str, Any]:
    request = case.request
    where = {"route": request.target} if request.kind == "http" else {"resource": request.target}
    return {
        "id": request.ident,
        "kind": request.kind,
        **where,
        "operation": request.operation,
        "method": request.method,
        "path": request.path,
        "requester": request.requester,
        "records": case.records,
        "request_ids": list(case.request_ids),
        "answer": answer,
    }


def write_corpus(path: Path, lines: Iterable[dict[str, Any]], redactor: Redactor) -> int:
    """Write atomically (a reader never sees half a corpus); returns the cases written."""
    header = {
        HEADER: VERSION,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "key_check": key_check(redactor),
    }
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    except OSError as e:
        raise ConfigError(f"--output {str(path)!r}: {e.strerror or e}") from e
    count = 0
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(exactjson.dumps(header) + b"\n")
            for line in lines:
                f.write(exactjson.dumps(line, default=str) + b"\n")
                count += 1
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def read_corpus(
    path: Path, redactor: Redactor, only: str | None = None
) -> tuple[list[Case], Loaded]:
    """The cases (of route or resource ``only`` when given) and the malformed lines."""
    try:
        raw = path.read_bytes().splitlines()
    except OSError as e:
        raise ConfigError(f"--corpus {str(path)!r}: {e.strerror or e}") from e
    loaded = Loaded(source=str(path))
    cases: list[Case] = []
    headers = 0
    for number, line in enumerate(raw, 1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            value = exactjson.loads(line)
        except exactjson.JSONDecodeError:
            loaded.bad(where, "not JSON")
            continue
        if isinstance(value, dict) and HEADER in value:
            _check_header(path, value, redactor)
            headers += 1
            continue
        case = _case(value)
        if isinstance(case, str):
            loaded.bad(where, case)
        elif only is None or case.request.target == only:
            cases.append(case)
    if not headers:
        raise ConfigError(f"--corpus {str(path)!r}: not a shadowproxy corpus (no header line)")
    return cases, loaded


def _check_header(path: Path, header: dict[str, Any], redactor: Redactor) -> None:
    if header.get(HEADER) != VERSION:
        raise ConfigError(
            f"--corpus {str(path)!r}: corpus version {header.get(HEADER)!r}; this shadowproxy "
            f"reads version {VERSION}"
        )
    if header.get("key_check") != key_check(redactor):
        raise ConfigError(
            f"--corpus {str(path)!r}: exported under another redaction key, so its hashed "
            "values cannot match; set the redaction key (redaction.key_env, default "
            "SHADOWPROXY_REDACTION_KEY) to the one it was exported with"
        )


def _case(value: Any) -> Case | str:
    """A corpus line as a case, or what is wrong with it."""
    if not isinstance(value, dict):
        return f"not a JSON object but {type(value).__name__}"
    kind = value.get("kind")
    target = value.get("route" if kind == "http" else "resource")
    answer = value.get("answer")
    text = [value.get(k) for k in ("method", "path", "operation")]
    if kind not in ("http", "store") or not isinstance(target, str):
        return "not a corpus case (no kind with its route or resource)"
    if not all(isinstance(t, str) for t in text) or not isinstance(answer, dict):
        return "not a corpus case (no method, path, operation or answer)"
    if kind == "http" and not isinstance(answer.get("status"), int):
        return "not a corpus case (the answer has no status)"
    if kind == "store" and "value" not in answer:
        return "not a corpus case (the answer has no value)"
    requester = value.get("requester")
    request = Request(
        kind, target, str(text[0]).upper(), str(text[1]), str(text[2]),
        requester if isinstance(requester, str) else None,
    )  # fmt: skip
    records = value.get("records")
    ids = value.get("request_ids")
    return Case(
        request,
        records=records if isinstance(records, int) and records > 0 else 1,
        request_ids=tuple(str(i) for i in ids) if isinstance(ids, list) else (),
        answer=answer,
    )
