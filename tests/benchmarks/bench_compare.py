"""Micro-benchmark of comparators (a script, not a test): µs per comparison.

.venv/bin/python tests/benchmarks/bench_compare.py
"""

from __future__ import annotations

import sys
import timeit
from collections.abc import Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from comparators import (
    DiffBudget,
    HttpSnapshot,
    RuleSpec,
    compare,
    compare_http,
    compile_rules,
)


def user(i: int) -> dict[str, object]:
    return {
        "id": f"user-{i:06d}",
        "email": f"user{i}@example.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "created_at": "2024-01-02T03:04:05.123456+00:00",
        "updated_at": "2024-06-07T08:09:10.654321+00:00",
        "balance": 1234.56,
        "active": True,
        "tags": ["admin", "beta", "early-adopter"],
        "address": {
            "street": "12 Analytical Engine Road",
            "city": "London",
            "postcode": "SW1A 1AA",
            "country": "GB",
        },
        "preferences": {"theme": "dark", "language": "en-GB", "newsletter": False},
        "devices": [
            {"id": f"d{i}-{n}", "kind": "phone", "last_seen": "2024-06-07T08:09:10Z"}
            for n in range(3)
        ],
        "notes": "x" * 360,
    }


def measure(label: str, call: Callable[[], object], number: int = 20_000) -> None:
    best = min(timeit.repeat(call, number=number, repeat=5)) / number
    print(f"{label:<44} {best * 1e6:8.2f} µs")


def main() -> None:
    record = user(1)
    body = orjson.dumps(record)
    reordered = orjson.dumps(dict(reversed(list(record.items()))))
    changed = orjson.dumps({**record, "first_name": "Augusta"})
    headers = (("content-type", "application/json"),)
    rules = compile_rules(RuleSpec(ignore=("updated_at",), headers=("content-type",)))
    empty = DiffBudget(per_second=0, burst=0)
    ok = HttpSnapshot(200, headers, body)
    print(f"body: {len(body)} bytes")

    measure("http: equal bytes", lambda: compare_http(ok, HttpSnapshot(200, headers, body), rules))
    reordered_snapshot = HttpSnapshot(200, headers, reordered)
    measure("http: equal after parse", lambda: compare_http(ok, reordered_snapshot, rules))
    changed_snapshot = HttpSnapshot(200, headers, changed)
    measure("http: mismatch, 1 field", lambda: compare_http(ok, changed_snapshot, rules))
    measure(
        "http: mismatch, summarised (budget empty)",
        lambda: compare_http(ok, changed_snapshot, rules, budget=empty),
    )
    other = orjson.loads(reordered)
    measure("records: equal", lambda: compare(record, other, rules))
    edited = {**record, "first_name": "Augusta"}
    measure("records: mismatch, 1 field", lambda: compare(record, edited, rules))


if __name__ == "__main__":
    main()
