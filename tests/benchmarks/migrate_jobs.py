"""Backfill and verify throughput, beside a naive copy script measured in the same run, and
the peak memory of each job at two table sizes (flat in the table's size, or not).

    python tests/benchmarks/migrate_jobs.py [--records 100000] [--naive-records 10000]
        [--sizes 50000,200000] [--dynamodb dynalite|moto] [--json out.json]

What runs, on this machine (PostgreSQL local, the DynamoDB emulator started here):

- **naive**: what a one-off migration script does. One process, one thread: read every row
  of the table from PostgreSQL into memory, then put the records into DynamoDB one by one
  (the same DynamoDB client and codecs as the proxy, so the ratio is about the method, not
  the client). Timed on the first ``--naive-records`` rows (its rate is flat in the count;
  100,000 one-by-one puts would take most of the run).
- **backfill**: ``shadowproxy backfill`` on ``--records`` records, a fresh target table, as a
  child process (its own interpreter, as a user runs it).
- **verify**: ``shadowproxy verify`` on the same table afterwards.
- **memory**: backfill and verify again at each of ``--sizes``; the peak RSS of each child
  (``ru_maxrss`` from ``wait4``).

Records/s are wall-clock. The ratio backfill / naive is the figure the issue asks for (at least 5x).
Not part of the test run; a benchmark, not a test (nothing here asserts on speed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchlib import REPO, BenchError, Processes, free_ports  # noqa: E402

sys.path.insert(0, str(REPO))

import yaml  # noqa: E402
from store_proxy import default_emulator, emulator_label, start_dynamodb  # noqa: E402

from proxy.migrate.job import open_job  # noqa: E402
from proxy.resources.admin_ops import init_stores  # noqa: E402
from proxy.settings import load_settings  # noqa: E402

PG_DSN = os.environ.get("SHADOWPROXY_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}


def environment_facts() -> dict[str, Any]:
    import platform

    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    psql = subprocess.run(["psql", "--version"], capture_output=True, text=True, check=False)
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "postgres": psql.stdout.strip() or "?",
    }


def config(dynamodb_url: str, table: str) -> dict[str, Any]:
    users = yaml.safe_load((REPO / "config" / "users.yaml").read_text())["resources"]["users"]
    users["stores"] = {
        "postgres": {"backend": "pg", "table": table},
        "dynamodb": {"backend": "ddb", "table": table},
    }
    return {
        "backends": {
            "pg": {"kind": "postgres", "dsn": PG_DSN, "pool_max": 8},
            "ddb": {
                "kind": "dynamodb",
                "endpoint_url": dynamodb_url,
                "region": "us-east-1",
                "timeout_seconds": 30,
            },
        },
        "resources": {"users": users},
        "flags": {"kind": "memory"},
    }


def record(i: int) -> dict[str, Any]:
    return {
        "id": str(uuid.UUID(int=(i * 0x9E3779B97F4A7C15) % 2**128)),
        "email": f"user{i}@example.com",
        "first_name": f"First{i}",
        "last_name": f"Last{i}",
        "is_active": i % 3 != 0,
        "created_at": "2024-05-06T07:08:09Z",
        "updated_at": None,
        "preferences": {"theme": "dark", "n": i, "tags": ["a", "b"]},
        "roles": ["user", *(["admin"] if i % 10 == 0 else [])],
    }


async def fill(path: Path, count: int) -> None:
    async with open_job(load_settings(path), "users", source=None, target=None, env=ENV) as job:
        schema = job.parts.schema
        for start in range(0, count, 2000):
            batch = [schema.validate(record(i), partial=False)
                     for i in range(start, min(count, start + 2000))]  # fmt: skip
            results = await job.source_store.batch_put(batch)
            if not all(r.ok for r in results):
                raise BenchError(f"filling PostgreSQL failed: {results[0].error}")


async def reset_target(path: Path, table: str) -> None:
    async with open_job(load_settings(path), "users", source=None, target=None, env=ENV) as job:
        await job.target_store._client.call("DeleteTable", {"TableName": table})  # type: ignore[attr-defined]
    await init_stores(load_settings(path), ENV)


async def drop(path: Path, table: str) -> None:
    async with open_job(load_settings(path), "users", source=None, target=None, env=ENV) as job:
        async with job.source_store._connection() as conn:  # type: ignore[attr-defined]
            await conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        await job.target_store._client.call("DeleteTable", {"TableName": table})  # type: ignore[attr-defined]


async def naive(path: Path, count: int) -> float:
    """Read all rows, then put them one by one; records/s."""
    async with open_job(load_settings(path), "users", source=None, target=None, env=ENV) as job:
        started = time.perf_counter()
        rows = []
        async for page in job.source_store.scan_pages(0, 1):
            rows.extend(page.records)
            if len(rows) >= count:
                break
        for row in rows[:count]:
            await job.target_store.put(row)
        return count / (time.perf_counter() - started)


async def ceiling(path: Path, count: int) -> float:
    """Records/s the DynamoDB endpoint takes when nothing else runs: records built in memory
    (no PostgreSQL, no read-back), BatchWriteItem through the same client, 8 pages at once.
    A backfill cannot beat it on this machine; it says how much of the gap is the emulator."""
    async with open_job(load_settings(path), "users", source=None, target=None, env=ENV) as job:
        schema = job.parts.schema
        records = [schema.validate(record(i), partial=False) for i in range(count)]
        limit = asyncio.Semaphore(8)

        async def page(start: int) -> None:
            async with limit:
                await job.target_store.batch_put(records[start : start + 1000])

        started = time.perf_counter()
        await asyncio.gather(*(page(s) for s in range(0, count, 1000)))
        return count / (time.perf_counter() - started)


def run_job(args: list[str], cwd: Path) -> tuple[float, int, str]:
    """(seconds, peak RSS in KiB, stdout) of one shadowproxy command in a child process."""
    cmd = [sys.executable, "-m", "proxy", *args]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **ENV, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(args[:1])} exited {proc.returncode}: {err.decode()[-2000:]}")
    return seconds, usage.ru_maxrss, out.decode()


def jobs(path: Path, work: Path, count: int, extra: list[str]) -> dict[str, float]:
    common = ["-c", str(path), "--resource", "users"]
    back_s, back_rss, _ = run_job(
        ["backfill", *common, "--restart", "--checkpoints", str(work / "cp"), *extra], work
    )
    ver_s, ver_rss, out = run_job(["verify", *common, "--format", "json"], work)
    if not json.loads(out)["clean"]:
        raise BenchError(f"verify after backfill is not clean: {out}")
    return {
        "records": count,
        "backfill_seconds": back_s,
        "backfill_rps": count / back_s,
        "backfill_rss_mib": back_rss / 1024,
        "verify_seconds": ver_s,
        "verify_rps": count / ver_s,
        "verify_rss_mib": ver_rss / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--naive-records", type=int, default=10_000)
    parser.add_argument("--sizes", default="50000,200000")
    parser.add_argument("--dynamodb", choices=("dynalite", "moto"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--concurrency", type=int, help="backfill --concurrency (default: its own)")
    args = parser.parse_args()
    emulator = args.dynamodb or default_emulator()[0]
    sizes = [int(s) for s in args.sizes.split(",") if s]
    extra = [] if args.concurrency is None else ["--concurrency", str(args.concurrency)]
    work = Path(tempfile.mkdtemp(prefix="bench-migrate-"))
    figures: dict[str, Any] = {"emulator": emulator_label(emulator), "machine": environment_facts()}
    procs = Processes(work)
    try:
        [port] = free_ports(1)
        url = start_dynamodb(emulator, port, procs)
        for n, count in enumerate([args.records, *sizes]):
            table = f"bench_users_{uuid.uuid4().hex[:8]}"
            path = work / f"{table}.yaml"
            path.write_text(yaml.safe_dump(config(url, table)))
            asyncio.run(init_stores(load_settings(path), ENV))
            try:
                asyncio.run(fill(path, count))
                if n == 0:
                    naive_rps = asyncio.run(naive(path, min(args.naive_records, count)))
                    asyncio.run(reset_target(path, table))
                    top = asyncio.run(ceiling(path, min(args.naive_records * 2, count)))
                    asyncio.run(reset_target(path, table))
                    figures["naive_rps"] = naive_rps
                    figures["ceiling_rps"] = top
                    figures["main"] = jobs(path, work, count, extra)
                    m = figures["main"]
                    print(f"{count:,} records: naive {naive_rps:,.0f}/s; backfill "
                          f"{m['backfill_rps']:,.0f}/s ({m['backfill_rps'] / naive_rps:.1f}x), "
                          f"verify {m['verify_rps']:,.0f}/s; the endpoint alone takes "
                          f"{top:,.0f}/s ({m['backfill_rps'] / top:.2f} of it)",
                          flush=True)  # fmt: skip
                else:
                    figures.setdefault("sizes", []).append(jobs(path, work, count, extra))
                    m = figures["sizes"][-1]
                    rates = f"{m['backfill_rps']:,.0f}/s, {m['verify_rps']:,.0f}/s"
                    print(
                        f"{count:,} records: backfill peak RSS {m['backfill_rss_mib']:.0f} MiB, "
                        f"verify peak RSS {m['verify_rss_mib']:.0f} MiB ({rates})",
                        flush=True,
                    )
            finally:
                asyncio.run(drop(path, table))
    finally:
        procs.stop_all()
    machine = figures["machine"]
    print(
        f"\nmachine: {machine.get('cpus')} CPUs, {machine.get('cpu_model')}; Python "
        f"{machine.get('python')}, {machine.get('postgres')}; DynamoDB: {figures['emulator']}"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
