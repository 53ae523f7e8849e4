"""Benchmark: shadowproxy store mode, reads and writes, vs a hand-written aiohttp + asyncpg service.

Not a test: nothing here asserts speed. One run measures ``GET /users/{id}`` with wrk on
127.0.0.1, ids drawn at random from the ``--users`` seeded ones (phase names as accepted by
``--phases``):

- ``baseline``   wrk -> a minimal aiohttp + asyncpg handler (``store/baseline_app.py``): the
                 same ``SELECT <columns> FROM <table> WHERE "id" = $1`` the proxy's PostgreSQL
                 store sends, the row as JSON; uvloop, one asyncpg pool per process
- ``shadow100``  wrk -> ``shadowproxy serve --workers N``: the reference ``users`` resource of
                 ``config/users.yaml``, PostgreSQL primary, every read shadowed to DynamoDB
                 (a local emulator, ``--dynamodb``) and compared (``shadow_reads: 1.0``)
- ``shadow10``   the same with ``shadow_reads: 0.1``
- ``shadow0``    the same with ``shadow_reads: 0`` (reference: the store path alone)

and, only when asked for (``--phases writes``, ``--phases all`` or by name), write throughput:
``PUT /users/{id}`` (a whole record) and ``PATCH /users/{id}`` (three columns), 50/50
(``PUT_SHARE``), on ids drawn at random from the seeded ones (``store/writes.lua``; the bodies
are generated here, checked against the ``users`` schema, and written to a file wrk reads):

- ``write_baseline``  wrk -> the same baseline app with its write routes: PUT one
                      ``INSERT ... ON CONFLICT ("id") DO UPDATE`` (the proxy's own upsert
                      statement), PATCH one ``UPDATE ... SET <given columns> WHERE "id" = $1
                      RETURNING <columns>``; PostgreSQL only
- ``write_dual``      wrk -> ``shadowproxy serve``: the ``users`` resource with ``read_from:
                      postgres``, ``write_to: [postgres, dynamodb]``, ``shadow_reads: 0`` and a
                      Redis repair log (``repair: {kind: redis, url: REDIS_URL, stream:
                      shadowproxy:bench:<table>}``, deleted again afterwards): every write logs
                      an intent, writes PostgreSQL, then DynamoDB with PostgreSQL's state and
                      reads PostgreSQL back (``proxy.resources.writes``), as in production.
                      The client is answered after PostgreSQL plus at most
                      ``secondary_write_budget_seconds`` (the default, 0.1 s, reported) of the
                      DynamoDB write. ``write_verify`` (1%) compares both stores for a sample.

The write phases use tables of their own (``<table>_writes``, seeded like the read tables), so
the read phases of later rounds still read equal stores. A write phase in which any response
was not 2xx (wrk counts status >= 400), in its warm-up or its run, is reported loudly (the
proxy's answers by status, a replay of a few of its requests, the log tail of the system under
test), flagged ``NON-2XX`` in the summary and the table, and counts as a failed phase (exit
status 1): a write benchmark with errors measures nothing. After a ``write_dual`` run the
script waits until every write intent settled (``--drain-timeout``) and reports the DynamoDB
writes per client write (1 unless PostgreSQL's state moved during a copy), the secondary
write failures, and what was left in the repair log (escalated or pending entries: each one a
write that did not reach DynamoDB on its path).

Each measured run is preceded by a warm-up run; after each run the script waits for the shadow
queue to drain and reads the proxy's ``/metrics``: comparisons by outcome
(``shadowproxy_comparisons_total``), shadows dropped (``shadowproxy_shadow_dropped_total``),
requests answered, and the mean primary/shadow (and, writing, secondary) store latencies. It
prints rps, p50, p99 per run, each phase's ratio to its baseline (``write_dual``'s to
``write_baseline``'s), a Markdown table for the README (one for reads, one for writes);
``--json FILE`` also writes every figure. ``--rounds N`` repeats all phases N times,
interleaved, and reports medians.

Usage (from the repository root; needs ``apt-get install -y wrk`` and PostgreSQL on
127.0.0.1:5432, user postgres, trust auth; ``write_dual`` also Redis on 127.0.0.1:6379,
``make services``)::

    .venv/bin/python tests/benchmarks/store_proxy.py [--duration 10] [--connections 32]
        [--users 2000] [--workers 1] [--rounds 1] [--dynamodb dynalite|moto] [--json out.json]
        [--phases baseline,shadow100,shadow10,shadow0 | reads | writes | all | a list]

The default ``--phases`` are the four read phases; ``writes`` is ``write_baseline,write_dual``,
``all`` the six.

The DynamoDB endpoint (``--dynamodb``): ``dynalite`` (the default when ``node`` and ``npm`` are
on PATH; https://github.com/architect/dynalite, Node.js, in memory) or ``moto`` (moto's server,
``proxy.store.embedded.start_moto_server`` in a process of its own, ``store/moto_server.py``;
the default without Node). dynalite is installed on first use with ``npm install --prefix
.bench-cache/dynalite dynalite@<pinned version>`` (``.bench-cache/`` is git-ignored; delete it
to reinstall) and started as ``node .../dynalite/cli.js --host 127.0.0.1 --port P
--createTableMs 0 --deleteTableMs 0 --updateTableMs 0``.

What it sets up and always removes again (also on Ctrl-C, SIGTERM and errors): the DynamoDB
emulator process on a free loopback port, a PostgreSQL table and a DynamoDB table with a unique
name (``shadowproxy_bench_<hex>``) created by ``init_stores`` and seeded with the same users in
both (no divergences: every comparison should be ``match``), with write phases a second pair
(``shadowproxy_bench_<hex>_writes``) and the Redis keys of the repair log (the stream
``shadowproxy:bench:shadowproxy_bench_<hex>`` and every key under it), the systems under test,
wrk.

The proxy's config is ``config/users.yaml`` (its backends, the ``users`` resource, readiness
thresholds) with: the benchmark's ports, DSN, endpoint and table; ``shadow_reads`` per phase;
``logging: WARNING``, no access log (the baseline has none either); no Redis cache
(``cache_ttl_seconds: 0``: every read goes to PostgreSQL, as in the baseline); no repair log
in the read phases (they only read), a stream of its own in the local Redis for ``write_dual``
(nothing else there is read or changed); flags and readiness counts held in the process
(``kind: memory``) instead of the local Redis, so that the benchmark neither reads nor changes
state shared with anyone else (with the shipped Redis flag store, Redis wins over the config:
the ``shadow_reads`` of one phase would leak into the next). Shadow runner settings are the
defaults (queue 1024, concurrency 64, timeout 5 s).

Fairness: the baseline gets ``--workers`` processes, like the proxy, and the same pool maximum
per process (``pool_max`` of ``config/users.yaml``); so does the write baseline. wrk runs one
thread. On a 2-core machine wrk, the system under test, PostgreSQL and the DynamoDB emulator
share the cores, the same way in every run: the figures are "whole machine" figures. Each run
reports the cores used by the system under test, PostgreSQL (the backends of the system under
test, found by the ``application_name`` its DSN sets), the DynamoDB emulator (``dynamodb``),
in ``write_dual`` the Redis server (``redis``: the whole server, whoever else uses it), wrk,
interrupts and other processes, how long the system under test was runnable but waiting for a
CPU, its CPU time per request and the emulator's CPU time per shadow read, or per client write
in ``write_dual`` (work drained after the run included): unlike rps, these figures hardly
depend on how busy the other cores are. Before each
run the script waits (``--quiet-timeout``) until other processes use at most
``--max-background`` % of the CPUs; a run during which they used more (or during which another
benchmark of this repository, ``tests/benchmarks/http_proxy.py``, ran) is measured again, up to
``--retries`` times, and flagged ``(!)`` in the table if it stays disturbed. Before starting
and before each phase the script also waits (``--wait-other``) while that other benchmark runs.

Why dynalite is the default: in production DynamoDB's CPU is not on the proxy's machine, here
the emulator's is, so the cheaper the emulator, the more the figures measure the proxy. moto
parses and answers every request in Python and closes every connection: ~3-4 ms of CPU per
GetItem on a 2-core machine, so at 10% shadowing moto alone took ~0.8 cores from the system
under test and the benchmark measured moto. dynalite costs ~0.5 ms of CPU per GetItem and keeps
connections alive. It is still on the same cores: read its share in the ``dynamodb`` CPU figure
of each run. At 100% shadowing an emulator may not keep up: the bounded shadow queue fills and
the excess is dropped (``shadowproxy_shadow_dropped_total{reason="queue_full"}``), never waited
for by clients.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchlib import (  # noqa: E402 - this folder is not a package
    REPO,
    BenchError,
    Processes,
    cpu_model,
    free_ports,
    http_get,
    shadowproxy_command,
    signals_ignored,
    terminate_on_sigterm,
    wait_ready,
    wrk_report,
)

HELPERS = HERE / "store"
sys.path.insert(0, str(REPO))

import asyncpg  # noqa: E402
import redis  # noqa: E402
import yaml  # noqa: E402

# The store-mode targets: rps of a shadowing phase over the baseline's, and the proxy's CPU per
# completed shadow read (``shadow_costs``). Printed met or missed; a missed one fails nothing.
MIN_RATIO = {"shadow10": 0.9, "shadow100": 0.6}
MAX_CPU_US_PER_SHADOW_READ = 150.0
READ_PHASES = ("baseline", "shadow100", "shadow10", "shadow0")
WRITE_PHASES = ("write_baseline", "write_dual")
PHASES = READ_PHASES + WRITE_PHASES
PHASE_GROUPS = {"reads": READ_PHASES, "writes": WRITE_PHASES, "all": PHASES}
BASELINES = ("baseline", "write_baseline")  # the hand-written app
BASELINE_OF = {"shadow100": "baseline", "shadow10": "baseline", "shadow0": "baseline",
               "write_dual": "write_baseline"}  # fmt: skip
SHADOW_READS = {"shadow100": 1.0, "shadow10": 0.1, "shadow0": 0.0, "write_dual": 0.0}
PHASE_LABELS = {
    "baseline": "baseline: aiohttp + asyncpg handler",
    "shadow100": "shadowproxy, PostgreSQL primary, DynamoDB shadow 100%",
    "shadow10": "shadowproxy, PostgreSQL primary, DynamoDB shadow 10%",
    "shadow0": "shadowproxy, PostgreSQL primary, no shadow (0%)",
    "write_baseline": "write baseline: aiohttp + asyncpg, PostgreSQL only",
    "write_dual": "shadowproxy, dual write PostgreSQL + DynamoDB",
}
SHORT_LABELS = {
    "baseline": "aiohttp + asyncpg baseline",
    "shadow100": "shadowproxy, shadow 100%",
    "shadow10": "shadowproxy, shadow 10%",
    "shadow0": "shadowproxy, shadow 0%",
    "write_baseline": "aiohttp + asyncpg write baseline (PostgreSQL only)",
    "write_dual": "shadowproxy, dual write (PostgreSQL + DynamoDB, Redis repair log)",
}
PUT_SHARE = 0.5  # of the write phases' requests; the rest are PATCHes
WRITE_VARIANTS = 2  # bodies per id and method in the write phases' request file
REDIS_URL = "redis://127.0.0.1:6379/0"  # write_dual's repair log (a stream of its own)
OTHER_BENCHMARKS = ("tests/benchmarks/http_proxy.py", "http_proxy.py")
DYNAMODB = "dynamodb"  # the emulator's process (log, CPU accounting), whichever it is
EMULATORS = ("dynalite", "moto")
DYNALITE_VERSION = "4.0.0"
DYNALITE_DIR = REPO / ".bench-cache" / "dynalite"  # git-ignored npm prefix
DYNALITE_CLI = DYNALITE_DIR / "node_modules" / "dynalite" / "cli.js"


# --------------------------------------------------------------------------- processes


def other_benchmark_pids() -> list[int]:
    """Pids of another benchmark of this repository (http_proxy.py) that is running now."""
    found: set[int] = set()
    for pattern in OTHER_BENCHMARKS:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                ["pgrep", "-f", pattern], capture_output=True, text=True, timeout=10
            )
            found |= {int(x) for x in out.stdout.split()}
    return sorted(found - {os.getpid(), os.getppid()})


def wait_for_other_benchmark(timeout: float) -> bool:
    """Wait (up to `timeout` s) while http_proxy.py runs: two benchmarks on 2 cores disturb
    each other's figures. True when none is running (any more)."""
    pids = other_benchmark_pids()
    if not pids:
        return True
    print(
        f"  another benchmark is running (http_proxy.py, pids {pids}); "
        f"waiting up to {timeout:.0f}s for it to finish",
        flush=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(10)
        if not other_benchmark_pids():
            print("  ... it finished", flush=True)
            time.sleep(3)  # let its processes exit
            return True
    print("  ! it is still running: the figures will be disturbed", flush=True)
    return False


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    errors: dict[str, int]
    sent: dict[str, int] = field(default_factory=dict)  # write phases: requests sent by method

    @classmethod
    def from_report(cls, report: dict[str, Any]) -> WrkResult:
        lat = report["latency_us"]
        duration_s = report["duration_us"] / 1e6
        return cls(
            requests=report["requests"],
            duration_s=round(duration_s, 3),
            rps=round(report["requests"] / duration_s, 1),
            p50_ms=lat["p50"] / 1000,
            p90_ms=lat["p90"] / 1000,
            p99_ms=lat["p99"] / 1000,
            p999_ms=lat["p99.9"] / 1000,
            max_ms=lat["max"] / 1000,
            errors={k: v for k, v in report["errors"].items() if v},
            sent=dict(report.get("sent", {})),
        )

    @property
    def non_2xx(self) -> int:
        """Responses with a status >= 400 (what wrk counts as a status error)."""
        return int(self.errors.get("status", 0))


CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuUse:
    """CPU used during a run, in cores (1.0 = one core busy the whole time)."""

    cpus: int
    busy: float
    processes: dict[str, float]  # ours, by name; "postgres": backends serving our table
    # Cores-worth of time our processes' threads were runnable but waiting for a CPU (run
    # queue, /proc/<pid>/task/*/schedstat): the direct measure of CPU contention. Threads
    # that exited during the run (e.g. moto's per-connection threads) are missed.
    runqueue: dict[str, float]
    other: float  # user+system time of processes that are not ours
    irq: float  # hard+soft interrupts: mostly the loopback TCP traffic
    steal: float


@dataclass(frozen=True)
class CpuSample:
    stat: list[int]  # /proc/stat "cpu": user nice system idle iowait irq softirq steal
    ticks: dict[str, float]  # CPU ticks used so far, by name
    waited_s: dict[str, float]  # run-queue wait so far of the live threads, by name
    children_s: float  # CPU seconds of waited-for children (wrk, once it has exited)


def cpu_sample(
    groups: dict[str, int], pg_pids: set[int], redis_pids: frozenset[int] = frozenset()
) -> CpuSample:
    """Machine CPU counters plus the CPU time of our process groups (name -> pgid), of the
    PostgreSQL backends serving the benchmark table and (``write_dual``) of the Redis server."""
    stat = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    by_pgid = {pgid: name for name, pgid in groups.items()}
    ticks = dict.fromkeys([*groups, "postgres", *(["redis"] if redis_pids else [])], 0.0)
    waited = dict.fromkeys(groups, 0.0)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # fields after "pid (comm)"
        used = int(fields[11]) + int(fields[12])  # utime + stime
        name = by_pgid.get(int(fields[2]))  # pgrp
        if name is None and int(entry.name) in pg_pids:
            name = "postgres"
        elif name is None and int(entry.name) in redis_pids:
            name = "redis"
        if name is not None:
            ticks[name] += used
        if name in waited:
            waited[name] += run_queue_seconds(entry.path)
    ticks["bench"] = sum(os.times()[:2]) * CLK_TCK  # this script (its own threads)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return CpuSample(stat, ticks, waited, usage.ru_utime + usage.ru_stime)


def run_queue_seconds(proc_dir: str) -> float:
    total = 0
    with contextlib.suppress(OSError):
        for task in os.scandir(f"{proc_dir}/task"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                total += int(Path(task.path, "schedstat").read_text().split()[1])
    return total / 1e9


def cpu_use(a: CpuSample, b: CpuSample) -> CpuUse:
    d = [y - x for x, y in zip(a.stat, b.stat, strict=True)]
    cpus = os.cpu_count() or 1
    elapsed = max(sum(d) / cpus, 1e-9)  # ticks of one CPU
    ours = {n: b.ticks[n] - a.ticks[n] for n in b.ticks if n in a.ticks}
    ours["wrk"] = round((b.children_s - a.children_s) * CLK_TCK)
    tasks = d[0] + d[1] + d[2]
    seconds = elapsed / CLK_TCK
    return CpuUse(
        cpus=cpus,
        busy=round((sum(d) - d[3] - d[4]) / elapsed, 2),
        processes={n: round(t / elapsed, 2) for n, t in ours.items()},
        runqueue={
            n: round((b.waited_s[n] - a.waited_s[n]) / seconds, 2)
            for n in b.waited_s
            if n in a.waited_s
        },
        other=round(max(0, tasks - sum(ours.values())) / elapsed, 2),
        irq=round((d[5] + d[6]) / elapsed, 2),
        steal=round(d[7] / elapsed, 2),
    )


@dataclass
class RunResult:
    """One measured wrk run plus what the proxy counted for it."""

    phase: str
    wrk: WrkResult
    proxy: dict[str, float] = field(default_factory=dict)  # /metrics deltas (proxy runs)
    sut_cpu_us_per_request: float | None = None  # incl. shadow work drained after the run
    # The DynamoDB emulator's CPU time per comparison (= shadow read) of the run, drained
    # ones included.
    dynamodb_cpu_us_per_shadow_read: float | None = None
    drain_seconds: float | None = None  # shadow queue drain time after the run
    cpu: CpuUse | None = None
    disturbed: bool = False  # other processes used more than --max-background during the run
    # Write phases: responses >= 400 of the warm-up run (the measured run's: wrk.non_2xx).
    warmup_non_2xx: int = 0
    # write_dual: seconds until every write intent of the repair log settled after the run
    # (None: not within --drain-timeout), what the log held then, and the DynamoDB emulator's
    # CPU time per client write (secondary writes finished after the run included).
    settle_seconds: float | None = None
    repair_log: dict[str, int] = field(default_factory=dict)
    dynamodb_cpu_us_per_write: float | None = None


# --------------------------------------------------------------------------- metrics

METRIC_LINE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(admin_url: str) -> dict[str, float]:
    """The counters the benchmark reports, flattened, from the proxy's /metrics."""
    status, body = http_get(admin_url + "/metrics", timeout=10.0)
    if status != 200:
        raise BenchError(f"{admin_url}/metrics answered {status}")
    out: dict[str, float] = {}

    def add(key: str, value: float) -> None:
        out[key] = out.get(key, 0.0) + value

    for line in body.decode(errors="replace").splitlines():
        m = METRIC_LINE.match(line)
        if not m:
            continue
        name, value = m["name"], float(m["value"])
        labels = dict(LABEL.findall(m["labels"] or ""))
        if name == "shadowproxy_comparisons_total":
            add(f"comparisons.{labels.get('outcome', '?')}", value)
        elif name == "shadowproxy_shadow_dropped_total":
            add(f"shadow_dropped.{labels.get('reason', '?')}", value)
        elif name == "shadowproxy_requests_total":
            add(f"requests.{labels.get('status', '?')}", value)
        elif name == "shadowproxy_shadow_queue_depth":
            out["queue_depth"] = value
        elif name == "shadowproxy_internal_errors_total":
            add("internal_errors", value)
        elif name == "shadowproxy_backend_errors_total":
            add(f"backend_errors.{labels.get('role', '?')}.{labels.get('kind', '?')}", value)
        elif name == "shadowproxy_dual_write_failures_total":
            add(f"dual_write_failures.{labels.get('store', '?')}", value)
        elif name == "shadowproxy_repair_append_failures_total":
            add("repair_append_failures", value)
        elif name == "shadowproxy_repairs_total":
            add(f"repairs.{labels.get('result', '?')}", value)
        elif name == "shadowproxy_repair_log_errors_total":
            add("repair_log_errors", value)
        elif name in (
            "shadowproxy_backend_request_duration_seconds_sum",
            "shadowproxy_backend_request_duration_seconds_count",
        ):
            kind = "sum" if name.endswith("_sum") else "count"
            add(f"latency.{labels.get('role', '?')}.{labels.get('backend', '?')}.{kind}", value)
    return out


def metric_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    keys = (set(before) | set(after)) - {"queue_depth"}
    return {
        k: round(after.get(k, 0.0) - before.get(k, 0.0), 6)
        for k in sorted(keys)
        if after.get(k, 0.0) - before.get(k, 0.0)
    }


def wait_drained(admin_url: str, timeout: float) -> float | None:
    """Seconds until the shadow queue (waiting + running jobs) is empty; None on timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if scrape(admin_url).get("queue_depth", 0.0) <= 0:
            return round(time.monotonic() - started, 2)
        time.sleep(0.2)
    return None


def comparisons(counters: dict[str, float]) -> dict[str, int]:
    return {k.split(".", 1)[1]: int(v) for k, v in counters.items() if k.startswith("comparisons.")}


def dropped(counters: dict[str, float]) -> int:
    return int(sum(v for k, v in counters.items() if k.startswith("shadow_dropped.")))


def dual_write_failures(counters: dict[str, float]) -> int:
    return int(sum(v for k, v in counters.items() if k.startswith("dual_write_failures.")))


def calls_per_request(counters: dict[str, float], role: str, backend: str) -> float | None:
    """Store calls of `role` per client request answered (``write_dual``: DynamoDB writes per
    client write, 1.0 unless PostgreSQL's state moved while a copy ran)."""
    answered = sum(v for k, v in counters.items() if k.startswith("requests."))
    if not answered:
        return None
    return round(counters.get(f"latency.{role}.{backend}.count", 0.0) / answered, 3)


def mean_ms(counters: dict[str, float], role: str, backend: str) -> float | None:
    count = counters.get(f"latency.{role}.{backend}.count", 0.0)
    if not count:
        return None
    return round(1000 * counters.get(f"latency.{role}.{backend}.sum", 0.0) / count, 3)


# --------------------------------------------------------------------------- stores


@dataclass(frozen=True)
class Env:
    """What one benchmark run set up: ports, endpoints, the table, the seeded ids."""

    tmp: Path
    dsn: str
    sut_dsn: str  # the same, with application_name = table: its backends can be told apart
    table: str
    dynamodb_url: str
    proxy_port: int
    admin_port: int
    baseline_port: int
    ids_file: Path
    sample_id: str
    get_sql: str
    pool_max: int
    # The write phases: their tables (the same name in both stores; None without a write
    # phase), their requests (store/writes.lua), write_dual's repair log stream and the pid
    # of the Redis server holding it (CPU accounting; empty when it is not on this machine).
    write_table: str | None = None
    writes_file: Path = Path("/dev/null")
    repair_stream: str = ""
    redis_pids: frozenset[int] = frozenset()


# Top-level keys of config/users.yaml the benchmark keeps. Everything else (cache, repair
# log, flag store, readiness store, sink, ...) is either set below or left at its default:
# nothing the proxy under test does may touch state shared with other users of this machine
# (the shipped config keeps flags, readiness counts and the repair log in the local Redis).
KEPT_KEYS = ("backends", "resources", "redaction", "shadow", "limits", "requesters")


def cpu_cell(us_per_request: float | None) -> str:
    """A table cell: CPU µs per request, or ``-`` when not measured."""
    return "-" if us_per_request is None else f"{us_per_request:,.0f}"


def users_config() -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load((REPO / "config" / "users.yaml").read_text())
    kept = {k: v for k, v in raw.items() if k in KEPT_KEYS}
    readiness = raw.get("readiness")
    if isinstance(readiness, dict):
        # The shipped thresholds, counted in the process (not in the shared Redis).
        kept["readiness"] = {
            k: v for k, v in readiness.items() if k not in ("store", "redis_url", "prefix")
        } | {"store": "memory"}
    return kept


def proxy_raw_config(env: Env, shadow_reads: float, table: str | None = None) -> dict[str, Any]:
    """config/users.yaml, pointed at the benchmark's stores (``table``, by default the read
    phases' one) and ports (see the module doc)."""
    raw = users_config()
    raw["listen"] = {"host": "127.0.0.1", "port": env.proxy_port}
    raw["admin"] = {"host": "127.0.0.1", "port": env.admin_port}
    raw["logging"] = {"format": "json", "level": "WARNING", "access_log": False}
    raw["backends"]["rds"]["dsn"] = env.sut_dsn
    raw["backends"]["dynamo"]["endpoint_url"] = env.dynamodb_url
    users = raw["resources"]["users"]
    for store in users["stores"].values():
        store["table"] = table or env.table
    users["flags"]["shadow_reads"] = shadow_reads
    users["cache_ttl_seconds"] = 0
    # Flags from this config, held in the process; the audit trail in the temp dir.
    raw["flags"] = {"kind": "memory", "audit_path": str(env.tmp / "flags-audit.jsonl")}
    raw["sink"] = {"kind": "jsonl", "path": str(env.tmp / "mismatches.jsonl")}
    return raw


def phase_config(env: Env, phase: str) -> dict[str, Any]:
    """The proxy's config for one phase: a read phase's ``shadow_reads``, or ``write_dual``:
    the write tables, writes to both stores, a repair log of its own in the local Redis."""
    if phase not in WRITE_PHASES:
        return proxy_raw_config(env, SHADOW_READS[phase])
    raw = proxy_raw_config(env, SHADOW_READS[phase], table=env.write_table)
    flags = raw["resources"]["users"]["flags"]
    flags["read_from"] = "postgres"
    flags["write_to"] = ["postgres", "dynamodb"]
    raw["repair"] = repair_section(env)
    return raw


def repair_section(env: Env) -> dict[str, Any]:
    """``repair:`` of config/users.yaml (its interval and limits), but in the local Redis
    (REDIS_URL) and on the benchmark's own stream, so nothing shared is read or changed."""
    shipped = yaml.safe_load((REPO / "config" / "users.yaml").read_text()).get("repair") or {}
    kept = {k: v for k, v in shipped.items() if k not in ("kind", "url", "dsn", "stream", "table")}
    return kept | {"kind": "redis", "url": REDIS_URL, "stream": env.repair_stream}


def write_settings() -> dict[str, float]:
    """What the write path of the users resource runs with (config/users.yaml or defaults)."""
    from proxy.settings import settings_from_mapping

    settings = settings_from_mapping(users_config(), source="config/users.yaml", env={})
    users = settings.resources["users"]
    return {
        "secondary_write_budget_seconds": users.secondary_write_budget_seconds,
        "secondary_write_timeout_seconds": users.secondary_write_timeout_seconds,
        "write_verify": users.write_verify,
        "put_share": PUT_SHARE,
    }


USERS_SEED = 1234  # make_users: the same users in every store, and in the write requests
WRITER_NAMES = ("Ada", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Alan", "Radia")


def write_requests(users: int) -> list[str]:
    """The write phases' requests, lines of ``store/writes.lua``: per seeded user
    WRITE_VARIANTS PUTs (the whole record, some columns changed) and as many PATCHes (three
    columns, one of them jsonb), every body checked against the users schema first."""
    from proxy.demo.store_story import make_users
    from proxy.store.schema import SchemaError

    schema = users_schema()
    lines = []
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for n, user in enumerate(make_users(users, seed=USERS_SEED)):
        key = user["id"]
        for v in range(WRITE_VARIANTS):
            when = (start + timedelta(minutes=n, seconds=v, microseconds=n % 997)).isoformat()
            put = user | {
                "email": f"writer{n}.{v}@example.com",
                "first_name": WRITER_NAMES[(n + v) % len(WRITER_NAMES)],
                "is_active": (n + v) % 7 != 0,
                "updated_at": when,
                "preferences": {"theme": ("dark", "light")[v % 2], "digest": v == 0, "v": v},
                "roles": ["viewer", "editor"][: (n + v) % 3],
            }
            patch = {
                "last_name": WRITER_NAMES[(n + 3 * v + 1) % len(WRITER_NAMES)],
                "updated_at": when,
                "preferences": {"theme": ("light", "dark")[v % 2], "digest": v == 1, "v": v},
            }
            try:
                schema.validate(put, partial=False)
                schema.check_changes(key, schema.validate(patch, partial=True))
            except SchemaError as e:
                raise BenchError(
                    f"a generated write body does not fit the users schema: {e}"
                ) from e
            lines.append(f"PUT {key} {json.dumps(put, separators=(',', ':'))}")
            lines.append(f"PATCH {key} {json.dumps(patch, separators=(',', ':'))}")
    return lines


async def setup_stores(env: Env, users: int, table: str | None = None) -> list[str]:
    """Create both tables (``init_stores``; ``table``, by default the read phases' one) and
    load the same users into both; the ids."""
    from proxy.demo.store_story import make_users
    from proxy.resources.admin_ops import init_stores
    from proxy.resources.wiring import build_parts
    from proxy.settings import settings_from_mapping

    table = table or env.table
    raw = proxy_raw_config(env, 1.0, table=table)
    settings = settings_from_mapping(raw, source="benchmark config", env={})
    for line in await init_stores(settings, env={}):
        print(f"  {line}", flush=True)
    parts = build_parts(settings.resources["users"], settings, env={})
    schema = parts.schema
    records = [schema.validate(u, partial=False) for u in make_users(users, seed=USERS_SEED)]
    pg, ddb = parts.stores["postgres"], parts.stores["dynamodb"]
    await pg.open()  # type: ignore[attr-defined]
    try:
        await ddb.open()  # type: ignore[attr-defined]
        try:
            for start in range(0, len(records), 500):
                chunk = records[start : start + 500]
                results = await asyncio.gather(pg.batch_put(chunk), ddb.batch_put(chunk))
                failed = [r for rs in results for r in rs if not r.ok]
                if failed:
                    raise BenchError(f"seeding failed for {len(failed)} items: {failed[0]}")
        finally:
            await ddb.close()  # type: ignore[attr-defined]
    finally:
        await pg.close()  # type: ignore[attr-defined]
    conn = await asyncpg.connect(env.dsn, timeout=10)
    try:
        count = await conn.fetchval(f'SELECT count(*) FROM "{table}"')
    finally:
        await conn.close()
    if count != users:
        raise BenchError(f"PostgreSQL table holds {count} rows, expected {users}")
    return [schema.render_key(r[schema.key]) for r in records]


def get_sql(table: str) -> str:
    """The exact get-by-key statement the proxy's PostgreSQL store sends."""
    from proxy.settings import settings_from_mapping
    from proxy.store.postgres_sql import Statements
    from proxy.store.schema import Schema

    settings = settings_from_mapping(users_config(), source="config/users.yaml", env={})
    schema = Schema(settings.resources["users"])
    return Statements(schema, table).get(schema.field_names)


def users_schema() -> Any:
    from proxy.settings import settings_from_mapping
    from proxy.store.schema import Schema

    settings = settings_from_mapping(users_config(), source="config/users.yaml", env={})
    return Schema(settings.resources["users"])


def put_sql(table: str) -> tuple[str, list[tuple[str, str]]]:
    """The exact upsert the proxy's PostgreSQL store sends for a PUT, and the columns with
    their types in its parameter order (the key first): what the write baseline runs."""
    from proxy.store.postgres_sql import Statements

    schema = users_schema()
    statements = Statements(schema, table)
    columns = [(name, statements.types[name]) for name in statements.names]
    if columns[0][0] != schema.key:
        raise BenchError(f"the write baseline needs the key first; the columns are {columns}")
    return statements.upsert(1), columns


async def drop_tables(dsn: str, table: str, dynamodb_url: str | None) -> list[str]:
    """Drop the benchmark's tables; lines saying what was done (never raises)."""
    done = []
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute(f'DROP TABLE IF EXISTS "{table}"')
            done.append(f"PostgreSQL table {table} dropped")
        finally:
            await conn.close()
    except (OSError, asyncpg.PostgresError, TimeoutError) as e:
        done.append(f"! could not drop PostgreSQL table {table}: {e}")
    if dynamodb_url is not None:
        try:
            done.append(await delete_dynamodb_table(dynamodb_url, table))
        except Exception as e:  # the emulator process is stopped right after anyway
            done.append(f"! could not delete DynamoDB table {table}: {type(e).__name__}: {e}")
    return done


async def delete_dynamodb_table(url: str, table: str) -> str:
    """DeleteTable through the proxy's own DynamoDB client (works with moto and dynalite)."""
    from proxy.settings import settings_from_mapping
    from proxy.store.base import StoreError
    from proxy.store.dynamodb import DynamoDBStore
    from proxy.store.schema import Schema

    raw = users_config()
    settings = settings_from_mapping(raw, source="config/users.yaml", env={})
    store = DynamoDBStore(
        url,
        str(raw["backends"]["dynamo"].get("region") or "us-east-1"),
        table,
        Schema(settings.resources["users"]),
        aws_access_key_id="test",  # emulators accept any pair
        aws_secret_access_key="test",
    )
    async with store:
        try:
            await store._call("DeleteTable", TableName=table)
        except StoreError as e:
            if "ResourceNotFoundException" in str(e):
                return f"DynamoDB table {table} was not there"
            raise
    return f"DynamoDB table {table} deleted"


async def pg_backend_pids(dsn: str, table: str) -> set[int]:
    """The PostgreSQL backends of the system under test: its DSN names the application
    after the benchmark table (``sut_dsn``)."""
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return set()
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1", table
        )
    finally:
        await conn.close()
    return {int(r["pid"]) for r in rows}


# --------------------------------------------------------------------------- the repair log


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL, socket_timeout=5, socket_connect_timeout=5)


def check_redis() -> frozenset[int]:
    """Redis answers at REDIS_URL (write_dual's repair log); the pid of its server when it
    runs on this machine (its CPU is then reported as ``redis``), else none."""
    try:
        with redis_client() as r:
            info: dict[str, Any] = r.info("server")
    except (redis.RedisError, OSError) as e:
        raise BenchError(
            f"no Redis answers on {REDIS_URL} (write_dual's repair log; `make services`): {e}"
        ) from e
    pid = int(info.get("process_id") or 0)
    with contextlib.suppress(OSError):
        if pid and "redis" in Path(f"/proc/{pid}/comm").read_text():
            return frozenset({pid})
    return frozenset()


def repair_log_state(stream: str) -> dict[str, int]:
    """What write_dual's repair log holds: ``intents`` (writes whose DynamoDB copy has not
    settled yet), ``escalated`` (failed ones, due for repair), ``pending`` (on the stream,
    being repaired) and ``stuck`` (past max_attempts) (``proxy.repair.redis_log``)."""
    with redis_client() as r:
        pipe = r.pipeline(transaction=False)
        pipe.zcard(f"{stream}:intents")
        pipe.zcard(f"{stream}:escalated")
        pipe.xlen(stream)
        pipe.xlen(f"{stream}:stuck")
        intents, escalated, pending, stuck = pipe.execute()
    return {"intents": intents, "escalated": escalated, "pending": pending, "stuck": stuck}


def wait_settled(stream: str, timeout: float) -> float | None:
    """Seconds until no write intent is left unsettled (every DynamoDB copy of the run done
    or escalated); None on timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if repair_log_state(stream)["intents"] == 0:
            return round(time.monotonic() - started, 2)
        time.sleep(0.2)
    return None


def delete_repair_log(stream: str) -> str:
    """Delete the benchmark's repair log: the stream (its consumer group with it) and every
    ``<stream>:*`` key (intents, escalations, per-key hashes); a line saying so (never raises)."""
    try:
        with redis_client() as r:
            keys = [stream.encode(), *r.scan_iter(match=f"{stream}:*", count=1000)]
            deleted = 0
            for start in range(0, len(keys), 500):
                deleted += int(r.unlink(*keys[start : start + 500]))
    except (redis.RedisError, OSError) as e:
        return f"! could not delete the Redis repair log {stream}: {e}"
    return f"Redis repair log {stream} deleted ({deleted} keys)"


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Settings:
    duration: float
    warmup: float
    connections: int
    threads: int
    workers: int
    max_background: float
    quiet_timeout: float
    drain_timeout: float
    wait_other: float
    retries: int
    dynamodb: str  # the DynamoDB emulator: "dynalite" or "moto"


def run_wrk(
    url: str, *, duration: float, s: Settings, env: Env, procs: Processes, write: bool = False
) -> WrkResult:
    """One wrk run: GETs (random_ids.lua), or with ``write`` the PUT/PATCH mix (writes.lua),
    whose responses >= 400 the caller reports (a read run with any is a BenchError)."""
    cmd = [
        "wrk",
        f"-t{s.threads}",
        f"-c{s.connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "--timeout",
        "5s",
        "-s",
        str(HELPERS / ("writes.lua" if write else "random_ids.lua")),
        url,
    ]
    if write:
        wrk_env = dict(
            os.environ,
            BENCH_WRITES_FILE=str(env.writes_file),
            BENCH_PUT_SHARE=str(PUT_SHARE),
            BENCH_PREFIX="/users/",
        )
    else:
        wrk_env = dict(os.environ, BENCH_IDS_FILE=str(env.ids_file), BENCH_PREFIX="/users/")
    report = wrk_report(procs, cmd, log=env.tmp / "wrk.log", duration=duration, env=wrk_env)
    result = WrkResult.from_report(report)
    if result.errors.get("status") and not write:
        # Every id exists: an error response means the system under test is broken, and
        # measuring how fast it fails would be meaningless.
        raise BenchError(
            f"{result.errors['status']} of {result.requests} responses were not 2xx: "
            f"try GET {url}/users/{env.sample_id}"
        )
    return result


def other_load(procs: Processes, seconds: float = 1.0) -> float:
    """Share (%) of all CPUs used by processes that are not ours over `seconds`."""
    before = cpu_sample(procs.running(), set())
    time.sleep(seconds)
    use = cpu_use(before, cpu_sample(procs.running(), set()))
    return round(100 * use.other / use.cpus, 1)


def wait_for_quiet(procs: Processes, max_pct: float, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    told = False
    while time.monotonic() < deadline:
        busy = other_load(procs)
        if busy <= max_pct:
            return
        if not told:
            print(f"    waiting up to {timeout:.0f}s for the CPUs to go quiet ({busy:.0f}% busy)")
            told = True


def measure(
    phase: str, url: str, s: Settings, env: Env, procs: Processes, admin_url: str | None
) -> RunResult:
    write, dual = phase in WRITE_PHASES, phase == "write_dual"
    wait_for_quiet(procs, s.max_background, s.quiet_timeout)
    print(f"  warm-up {s.warmup:g}s ...", flush=True)
    warm = run_wrk(url, duration=s.warmup, s=s, env=env, procs=procs, write=write)
    if warm.non_2xx:
        shout(f"{warm.non_2xx:,} of {warm.requests:,} responses of the warm-up were NOT 2xx")
    before: dict[str, float] = {}
    if admin_url:
        if dual and wait_settled(env.repair_stream, s.drain_timeout) is None:
            print(f"    ! write intents not settled {s.drain_timeout:g}s after the warm-up")
        if wait_drained(admin_url, s.drain_timeout) is None:
            print(f"    ! shadow queue not drained {s.drain_timeout:g}s after the warm-up")
        before = scrape(admin_url)
    else:
        time.sleep(1.0)
    pg_pids = asyncio.run(pg_backend_pids(env.dsn, env.table))
    redis_pids = env.redis_pids if dual else frozenset()
    print(f"  measuring {s.duration:g}s ({s.connections} connections) ...", flush=True)
    before_cpu = cpu_sample(procs.running(), pg_pids, redis_pids)
    result = run_wrk(url, duration=s.duration, s=s, env=env, procs=procs, write=write)
    cpu = cpu_use(before_cpu, cpu_sample(procs.running(), pg_pids, redis_pids))
    other_bench = other_benchmark_pids()
    run = RunResult(
        phase=phase,
        wrk=result,
        cpu=cpu,
        disturbed=100 * cpu.other / cpu.cpus > s.max_background or bool(other_bench),
        warmup_non_2xx=warm.non_2xx,
    )
    if admin_url:
        at_end = scrape(admin_url)
        if dual:  # the DynamoDB copies first: write_verify comparisons follow them
            run.settle_seconds = wait_settled(env.repair_stream, s.drain_timeout)
            run.repair_log = repair_log_state(env.repair_stream)
        run.drain_seconds = wait_drained(admin_url, s.drain_timeout)
        run.proxy = metric_delta(before, scrape(admin_url))
        run.proxy["in_run.comparisons"] = sum(comparisons(metric_delta(before, at_end)).values())
    # The system's CPU per request, including the shadow work still queued when wrk stopped.
    after = cpu_sample(procs.running(), pg_pids, redis_pids)
    if result.requests and phase in after.ticks:
        used_s = (after.ticks[phase] - before_cpu.ticks[phase]) / CLK_TCK
        run.sut_cpu_us_per_request = round(1e6 * used_s / result.requests, 1)
    emulator_s = None
    if DYNAMODB in after.ticks and DYNAMODB in before_cpu.ticks:
        emulator_s = (after.ticks[DYNAMODB] - before_cpu.ticks[DYNAMODB]) / CLK_TCK
    shadow_reads = sum(comparisons(run.proxy).values())
    if not write and shadow_reads and emulator_s is not None:
        run.dynamodb_cpu_us_per_shadow_read = round(1e6 * emulator_s / shadow_reads, 1)
    if dual and result.requests and emulator_s is not None:
        run.dynamodb_cpu_us_per_write = round(1e6 * emulator_s / result.requests, 1)
    print("    " + describe(run, s.dynamodb), flush=True)
    if write and (result.non_2xx or warm.non_2xx):
        report_write_errors(run, url, env, procs)
    if other_bench:
        print("    ! another benchmark (http_proxy.py) ran during this run", flush=True)
    elif run.disturbed:
        print(
            f"    ! other processes used {cpu.other:.2f} cores "
            f"({100 * cpu.other / cpu.cpus:.0f}% of the CPUs) during this run: "
            "these figures are not trustworthy",
            flush=True,
        )
    return run


def shout(message: str) -> None:
    bar = "!" * 100
    print(f"\n{bar}\n!!! {message}\n{bar}\n", flush=True)


def report_write_errors(run: RunResult, url: str, env: Env, procs: Processes) -> None:
    """A write run had responses >= 400: say so loudly, with what tells why (the proxy's
    answers by status, a few of the run's requests sent again, the log of the system)."""
    w = run.wrk
    shout(
        f"{run.phase}: {w.non_2xx:,} of {w.requests:,} responses were NOT 2xx "
        f"(warm-up: {run.warmup_non_2xx:,}): these write figures are worthless"
    )
    statuses = {
        k.split(".", 1)[1]: int(v) for k, v in run.proxy.items() if k.startswith("requests.")
    }
    if statuses:
        print(f"    the proxy answered, by status: {statuses}")
    lines = env.writes_file.read_text().splitlines()
    sample = []
    for method in ("PUT", "PATCH"):  # four of each, spread over the ids
        of_method = [x for x in lines if x.startswith(method + " ")]
        sample += of_method[:: max(1, len(of_method) // 4)][:4]
    print(f"    {len(sample)} of the run's requests sent again, one at a time:")
    for line in sample:
        method, key, body = line.split(" ", 2)
        try:
            status, answer = http_request(method, f"{url}/users/{key}", body.encode())
        except OSError as e:
            print(f"      {method} /users/{key} -> {type(e).__name__}: {e}")
            continue
        text = answer[:200].decode(errors="replace") if status >= 300 else ""
        print(f"      {method} /users/{key} -> {status} {text}".rstrip())
    tail = procs.log_tail(run.phase, 40)
    print(f"    last lines of the {run.phase} log:")
    print("\n".join(f"      {line}" for line in tail.splitlines()) or "      (empty)", flush=True)


def describe(run: RunResult, emulator: str) -> str:
    w = run.wrk
    text = (
        f"{w.rps:,.0f} rps  p50 {w.p50_ms:.3f} ms  p90 {w.p90_ms:.3f} ms  "
        f"p99 {w.p99_ms:.3f} ms  max {w.max_ms:.1f} ms  ({w.requests:,} requests)"
    )
    if w.errors:
        text += f"  ERRORS {w.errors}"
    if w.sent:
        text += "\n    sent: " + ", ".join(f"{m} {n:,}" for m, n in w.sent.items())
    if run.phase in WRITE_PHASES:
        text += f"; non-2xx responses: {w.non_2xx:,} (warm-up: {run.warmup_non_2xx:,})"
        if w.non_2xx or run.warmup_non_2xx:
            text += "  <== NON-2XX: WORTHLESS"
    if run.proxy and run.phase in WRITE_PHASES:
        text += describe_writes(run)
    elif run.proxy:
        p = run.proxy
        outcomes = ", ".join(f"{k} {v:,}" for k, v in sorted(comparisons(p).items())) or "none"
        statuses = {k.split(".", 1)[1]: int(v) for k, v in p.items() if k.startswith("requests.")}
        text += (
            f"\n    proxy: answered {statuses}; comparisons: {outcomes} "
            f"({int(p.get('in_run.comparisons', 0)):,} finished during the run"
        )
        if run.drain_seconds is not None:
            text += f", queue drained {run.drain_seconds:g}s after it"
        else:
            text += ", queue NOT drained"
        text += f"); shadows dropped: {dropped(p):,}"
        lat = [
            f"{role} {backend} {ms:.2f} ms"
            for role, backend in (("primary", "postgres"), ("shadow", "dynamodb"))
            if (ms := mean_ms(p, role, backend)) is not None
        ]
        if lat:
            text += "\n    mean store call: " + ", ".join(lat)
        errs = {k: int(v) for k, v in p.items() if k.startswith(("backend_errors", "internal"))}
        if errs:
            text += f"\n    errors: {errs}"
    if run.cpu:
        c = run.cpu
        parts = [
            f"{n} ({emulator}) {v:.2f}" if n == DYNAMODB else f"{n} {v:.2f}"
            for n, v in c.processes.items()
        ]
        parts += [f"irq {c.irq:.2f}", f"other {c.other:.2f}", f"steal {c.steal:.2f}"]
        text += f"\n    cpu cores used (of {c.cpus}, busy {c.busy:.2f}): " + ", ".join(parts)
        sut = run.phase
        if run.sut_cpu_us_per_request is not None:
            text += f"\n    {sut}: {run.sut_cpu_us_per_request:,.0f} µs CPU per request"
            text += f", runnable but waiting for a CPU {c.runqueue.get(sut, 0):.2f} cores"
        if run.dynamodb_cpu_us_per_shadow_read is not None:
            text += (
                f"\n    {DYNAMODB} ({emulator}): {run.dynamodb_cpu_us_per_shadow_read:,.0f} µs "
                "CPU per shadow read"
            )
        if run.dynamodb_cpu_us_per_write is not None:
            text += (
                f"\n    {DYNAMODB} ({emulator}): {run.dynamodb_cpu_us_per_write:,.0f} µs "
                "CPU per client write"
            )
    return text


def describe_writes(run: RunResult) -> str:
    """The proxy's side of a write run: answers, DynamoDB copies, the repair log."""
    p = run.proxy
    statuses = {k.split(".", 1)[1]: int(v) for k, v in p.items() if k.startswith("requests.")}
    per_write = calls_per_request(p, "secondary", "dynamodb")
    text = (
        f"\n    proxy: answered {statuses}; DynamoDB writes per client write "
        f"{'-' if per_write is None else f'{per_write:.3f}'}; secondary write failures "
        f"{dual_write_failures(p):,}"
    )
    if run.settle_seconds is not None:
        text += f"; write intents settled {run.settle_seconds:g}s after the run"
    else:
        text += "; write intents NOT settled"
    if run.repair_log:
        text += "\n    repair log after it: " + ", ".join(
            f"{k} {v:,}" for k, v in run.repair_log.items()
        )
        left = sum(v for k, v in run.repair_log.items() if k != "intents")
        if left:
            text += f"  <== {left:,} write(s) did not reach DynamoDB on their path"
    outcomes = ", ".join(f"{k} {v:,}" for k, v in sorted(comparisons(p).items()))
    if outcomes:
        text += f"\n    write_verify comparisons: {outcomes}"
    repairs = {k.split(".", 1)[1]: int(v) for k, v in p.items() if k.startswith("repairs.")}
    if repairs:
        text += f"; repairs: {repairs}"
    lat = [
        f"{role} {backend} {ms:.2f} ms"
        for role, backend in (("primary", "postgres"), ("secondary", "dynamodb"))
        if (ms := mean_ms(p, role, backend)) is not None
    ]
    if lat:
        text += "\n    mean store call: " + ", ".join(lat)
    errs = {
        k: int(v)
        for k, v in p.items()
        if k.startswith(("backend_errors", "internal", "repair_append", "repair_log_errors"))
    }
    if errs:
        text += f"\n    errors: {errs}"
    return text


# --------------------------------------------------------------------------- systems under test


def start_proxy(phase: str, s: Settings, env: Env, procs: Processes) -> subprocess.Popen[bytes]:
    config = env.tmp / f"{phase}.yaml"
    config.write_text(yaml.safe_dump(phase_config(env, phase), sort_keys=False))
    check = subprocess.run(
        [*shadowproxy_command(), "check-config", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    if check.returncode != 0:
        raise BenchError(
            f"shadowproxy check-config rejected {config}:\n{(check.stderr or check.stdout).strip()}"
        )
    check_isolated(config, env.repair_stream if phase == "write_dual" else None)
    # The benchmark's config must be the one measured: drop SHADOWPROXY__* overrides.
    penv = {k: v for k, v in os.environ.items() if not k.startswith("SHADOWPROXY__")}
    penv.pop("PROMETHEUS_MULTIPROC_DIR", None)
    penv.setdefault("SHADOWPROXY_REDACTION_KEY", uuid.uuid4().hex)
    cmd = [*shadowproxy_command(), "serve", "-c", str(config), "--workers", str(s.workers)]
    proc = procs.start(phase, cmd, env=penv)
    admin = f"http://127.0.0.1:{env.admin_port}"
    wait_ready(admin + "/healthz", proc, 60, "shadowproxy", procs, phase)
    wait_ready(f"http://127.0.0.1:{env.proxy_port}/users/{env.sample_id}", proc, 30,
               "shadowproxy", procs, phase)  # fmt: skip
    return proc


def check_isolated(config: Path, repair_stream: str | None = None) -> None:
    """Refuse a config that would make the proxy use the shared Redis (or the repo dir); a
    repair log only on ``repair_stream``, the benchmark's own (write_dual)."""
    from proxy.settings import load_settings

    settings = load_settings(config, env={})
    shared = []
    if settings.cache is not None:
        shared.append("cache")
    repair = settings.repair
    if repair is not None and not (
        repair_stream and repair.kind == "redis" and repair.stream == repair_stream
    ):
        shared.append("repair")
    flags = getattr(settings, "flags", None)
    if flags is not None and getattr(flags, "kind", "memory") != "memory":
        shared.append("flags")
    readiness = getattr(settings, "readiness", None)
    if readiness is not None and getattr(readiness, "store", "memory") != "memory":
        shared.append("readiness")
    if getattr(settings.sink, "kind", "jsonl") != "jsonl":
        shared.append("sink")
    if shared:
        raise BenchError(f"{config}: would use shared state ({', '.join(shared)}); not started")


def start_baseline(
    s: Settings, env: Env, procs: Processes, phase: str = "baseline"
) -> subprocess.Popen[bytes]:
    """The baseline app (process name ``phase``); as ``write_baseline`` on the write table,
    with its PUT and PATCH routes."""
    cmd = [
        sys.executable,
        str(HELPERS / "baseline_app.py"),
        "--dsn", env.sut_dsn,
        "--sql", env.get_sql,
        "--port", str(env.baseline_port),
        "--pool-max", str(env.pool_max),
        "--workers", str(s.workers),
    ]  # fmt: skip
    if phase == "write_baseline":
        assert env.write_table is not None
        upsert, columns = put_sql(env.write_table)
        cmd[cmd.index("--sql") + 1] = get_sql(env.write_table)
        cmd += ["--table", env.write_table, "--put-sql", upsert, "--columns", json.dumps(columns)]
    if s.workers == 1:
        cmd.append("--reuse-port")  # harmless, and the same socket options in both cases
    proc = procs.start(phase, cmd)
    wait_ready(f"http://127.0.0.1:{env.baseline_port}/healthz", proc, 60, "baseline", procs,
               phase)  # fmt: skip
    return proc


def verify(url: str) -> dict[str, Any]:
    status, body = http_get(url, timeout=5.0)
    if status != 200:
        raise BenchError(f"{url} answered {status}: {body[:300]!r}")
    doc: dict[str, Any] = json.loads(body)
    return doc


def http_request(method: str, url: str, body: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def probe_writes(url: str, env: Env) -> None:
    """The first PUT and the first PATCH of the write requests, sent once before the warm-up:
    a system under test that refuses them is not measured."""
    lines = env.writes_file.read_text().splitlines()
    for method in ("PUT", "PATCH"):
        line = next(x for x in lines if x.startswith(method + " "))
        _, key, body = line.split(" ", 2)
        status, answer = http_request(method, f"{url}/users/{key}", body.encode())
        if status != 200:
            raise BenchError(
                f"{method} {url}/users/{key} answered {status}: {answer[:300]!r} (body {body})"
            )
        doc = json.loads(answer)
        if doc.get("id") != key:
            raise BenchError(f"{method} {url}/users/{key} answered another record: {doc}")


def run_phase(phase: str, s: Settings, env: Env, procs: Processes) -> RunResult:
    wait_for_other_benchmark(s.wait_other)
    if phase in BASELINES:
        proc = start_baseline(s, env, procs, phase)
        url, admin = f"http://127.0.0.1:{env.baseline_port}", None
    else:
        proc = start_proxy(phase, s, env, procs)
        url, admin = f"http://127.0.0.1:{env.proxy_port}", f"http://127.0.0.1:{env.admin_port}"
    try:
        doc = verify(f"{url}/users/{env.sample_id}")
        if doc.get("id") != env.sample_id:
            raise BenchError(f"{phase}: /users/{env.sample_id} answered another record: {doc}")
        if phase in WRITE_PHASES:
            probe_writes(url, env)
        run = measure(phase, url, s, env, procs, admin)
        for attempt in range(s.retries):
            if not run.disturbed:
                break
            print(f"  disturbed: measuring again ({attempt + 1}/{s.retries})", flush=True)
            wait_for_other_benchmark(s.wait_other)
            again = measure(phase, url, s, env, procs, admin)
            if again.cpu is None or run.cpu is None or again.cpu.other <= run.cpu.other:
                run = again
        if run.disturbed:
            print("  ! still disturbed: keeping the attempt with the least other CPU", flush=True)
        return run
    finally:
        procs.stop(proc)


# --------------------------------------------------------------------------- summary

Rounds = list[dict[str, RunResult]]


@dataclass(frozen=True)
class Figures:
    """Medians over the rounds of one phase."""

    rps: float
    p50_ms: float
    p99_ms: float
    rps_range: tuple[float, float]
    rounds: int
    disturbed_rounds: int
    comparisons: dict[str, int]  # summed over the rounds
    shadow_dropped: int
    requests: int
    primary_ms: float | None
    shadow_ms: float | None
    cpu: dict[str, float]  # median cores by process
    sut_cpu_us_per_request: float | None  # median
    sut_runqueue_cores: float | None  # median
    dynamodb_cpu_us_per_shadow_read: float | None  # median: the emulator's CPU
    # The write phases (zero or None for the read phases):
    non_2xx: int = 0  # responses >= 400, warm-ups included, summed over the rounds
    secondary_ms: float | None = None  # median of the mean DynamoDB write (write_dual)
    dynamodb_writes_per_request: float | None = None  # median
    dual_write_failures: int = 0  # summed over the rounds
    unsettled_runs: int = 0  # runs after which write intents did not settle in time
    repair_log: dict[str, int] = field(default_factory=dict)  # after the last round
    dynamodb_cpu_us_per_write: float | None = None  # median: the emulator's CPU


def summarize(rounds: Rounds) -> dict[str, Figures]:
    out: dict[str, Figures] = {}
    for phase in PHASES:
        runs = [r[phase] for r in rounds if phase in r]
        if not runs:
            continue
        rps = [run.wrk.rps for run in runs]
        outcomes: dict[str, int] = {}
        for run in runs:
            for k, v in comparisons(run.proxy).items():
                outcomes[k] = outcomes.get(k, 0) + v
        names = {n for run in runs if run.cpu for n in run.cpu.processes} | {"other", "irq"}
        cpu = {}
        for n in sorted(names):
            vals = [
                (run.cpu.processes.get(n, 0.0) if n not in ("other", "irq") else
                 getattr(run.cpu, n))
                for run in runs if run.cpu
            ]  # fmt: skip
            if vals:
                cpu[n] = round(statistics.median(vals), 2)
        prim = [m for run in runs if (m := mean_ms(run.proxy, "primary", "postgres"))]
        shad = [m for run in runs if (m := mean_ms(run.proxy, "shadow", "dynamodb"))]
        secondary = [m for run in runs if (m := mean_ms(run.proxy, "secondary", "dynamodb"))]
        out[phase] = Figures(
            rps=round(statistics.median(rps), 1),
            p50_ms=round(statistics.median(run.wrk.p50_ms for run in runs), 3),
            p99_ms=round(statistics.median(run.wrk.p99_ms for run in runs), 3),
            rps_range=(min(rps), max(rps)),
            rounds=len(runs),
            disturbed_rounds=sum(run.disturbed for run in runs),
            comparisons=outcomes,
            shadow_dropped=sum(dropped(run.proxy) for run in runs),
            requests=sum(run.wrk.requests for run in runs),
            primary_ms=round(statistics.median(prim), 3) if prim else None,
            shadow_ms=round(statistics.median(shad), 3) if shad else None,
            cpu=cpu,
            sut_cpu_us_per_request=median_or_none([run.sut_cpu_us_per_request for run in runs]),
            sut_runqueue_cores=median_or_none(
                [run.cpu.runqueue.get(phase) if run.cpu else None for run in runs]
            ),
            dynamodb_cpu_us_per_shadow_read=median_or_none(
                [run.dynamodb_cpu_us_per_shadow_read for run in runs]
            ),
            non_2xx=sum(run.wrk.non_2xx + run.warmup_non_2xx for run in runs),
            secondary_ms=round(statistics.median(secondary), 3) if secondary else None,
            dynamodb_writes_per_request=median_or_none(
                [calls_per_request(run.proxy, "secondary", "dynamodb") for run in runs]
                if phase == "write_dual"
                else []
            ),
            dual_write_failures=sum(dual_write_failures(run.proxy) for run in runs),
            unsettled_runs=sum(run.settle_seconds is None for run in runs if phase == "write_dual"),
            repair_log=runs[-1].repair_log,
            dynamodb_cpu_us_per_write=median_or_none(
                [run.dynamodb_cpu_us_per_write for run in runs]
            ),
        )
    return out


def median_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 2) if present else None


def ratios(rounds: Rounds) -> tuple[dict[str, float | None], dict[str, list[float]]]:
    """rps of each proxy phase over its baseline's (``BASELINE_OF``), within each round, then
    the median; the read phases always, ``write_dual`` when it ran."""
    ran = {phase for results in rounds for phase in results}
    per_round: dict[str, list[float]] = {p: [] for p in BASELINE_OF if p in READ_PHASES or p in ran}
    for results in rounds:
        for phase in per_round:
            base = results.get(BASELINE_OF[phase])
            if base and phase in results and base.wrk.rps:
                per_round[phase].append(round(results[phase].wrk.rps / base.wrk.rps, 3))
    med = {p: round(statistics.median(v), 3) if v else None for p, v in per_round.items()}
    return med, per_round


def shadow_costs(rounds: Rounds) -> dict[str, float | None]:
    """Proxy CPU per completed shadow read (µs), median over rounds: the extra CPU per request
    of a shadowing phase over ``shadow0`` in the same round, times its requests, divided by
    the comparisons that ran (dropped shadows are not divided by, their small cost included)."""
    per_round: dict[str, list[float]] = {"shadow100": [], "shadow10": []}
    for results in rounds:
        base = results.get("shadow0")
        if base is None or base.sut_cpu_us_per_request is None:
            continue
        for phase, values in per_round.items():
            run = results.get(phase)
            if run is None or run.sut_cpu_us_per_request is None:
                continue
            ran = sum(v for k, v in comparisons(run.proxy).items() if k != "dropped")
            if ran:
                extra = run.sut_cpu_us_per_request - base.sut_cpu_us_per_request
                values.append(round(extra * run.wrk.requests / ran, 1))
    return {p: round(statistics.median(v), 1) if v else None for p, v in per_round.items()}


def markdown(
    summary: dict[str, Figures],
    r: dict[str, float | None],
    s: Settings,
    writes: dict[str, float],
    shadow_costs_of: dict[str, float | None],
) -> str:
    """The read table (when a read phase ran, or nothing did), then the write table (when a
    write phase ran)."""
    tables = []
    if any(p in summary for p in READ_PHASES) or not summary:
        tables.append(read_markdown(summary, r, s, shadow_costs_of))
    if any(p in summary for p in WRITE_PHASES):
        tables.append(write_markdown(summary, r, s, writes))
    return "\n\n".join(tables)


def read_markdown(
    summary: dict[str, Figures],
    r: dict[str, float | None],
    s: Settings,
    costs: dict[str, float | None],
) -> str:
    rounds = max((f.rounds for p, f in summary.items() if p in READ_PHASES), default=1)
    lines = [
        f"Get by key, `GET /users/{{id}}` (random ids), wrk -t{s.threads} -c{s.connections}, "
        f"{s.duration:g} s per run after a {s.warmup:g} s warm-up, {s.workers} process(es) "
        f"per system under test, DynamoDB: {emulator_label(s.dynamodb)} on the same cores"
        + (f", median of {rounds} interleaved rounds" if rounds > 1 else "")
        + ":",
        "",
        "| system | rps | p50 ms | p99 ms | rps vs baseline | comparisons (outcomes) "
        "| shadows dropped | CPU µs/request |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    disturbed = False
    for phase in READ_PHASES:
        f = summary.get(phase)
        if f is None:
            continue
        mark = " (!)" if f.disturbed_rounds else ""
        disturbed |= bool(f.disturbed_rounds)
        ratio = "1.00" if phase == "baseline" else (
            "-" if r.get(phase) is None else f"{r[phase]:.2f}"
        )  # fmt: skip
        if phase == "baseline":
            comp, drop = "-", "-"
        else:
            total = sum(f.comparisons.values())
            comp = (
                f"{total:,}: " + ", ".join(f"{k} {v:,}" for k, v in sorted(f.comparisons.items()))
                if total
                else "0"
            )
            drop = f"{f.shadow_dropped:,}"
        cpu_per_request = cpu_cell(f.sut_cpu_us_per_request)
        lines.append(
            f"| {SHORT_LABELS[phase]}{mark} | {f.rps:,.0f} | {f.p50_ms:.2f} | {f.p99_ms:.2f} "
            f"| {ratio} | {comp} | {drop} | {cpu_per_request} |"
        )
    lines += [
        "",
        "CPU µs/request: CPU time of the system under test (all its processes) per request,",
        "shadow reads finished after the run included.",
    ]
    emulator_cpu = [
        f"~{f.dynamodb_cpu_us_per_shadow_read:,.0f} µs ({SHORT_LABELS[phase]})"
        for phase, f in summary.items()
        if f.dynamodb_cpu_us_per_shadow_read is not None and phase in READ_PHASES
    ]
    if emulator_cpu:
        lines.append(
            f"The DynamoDB emulator ({s.dynamodb}) used per shadow read: "
            + ", ".join(emulator_cpu)
            + "."
        )
    lines += ["", "Targets:", *(f"- {line}" for line in target_lines(r, costs))]
    if disturbed:
        lines.append(
            "(!) other processes used more than the allowed share of the CPUs during the run."
        )
    return "\n".join(lines)


def write_markdown(
    summary: dict[str, Figures], r: dict[str, float | None], s: Settings, writes: dict[str, float]
) -> str:
    rounds = max((f.rounds for p, f in summary.items() if p in WRITE_PHASES), default=1)
    put_pct = round(100 * PUT_SHARE)
    lines = [
        f"Writes, `PUT /users/{{id}}` (the whole record) {put_pct}% and `PATCH /users/{{id}}` "
        f"(three columns) {100 - put_pct}% on random ids, wrk -t{s.threads} -c{s.connections}, "
        f"{s.duration:g} s per run after a {s.warmup:g} s warm-up, {s.workers} process(es) per "
        f"system under test, DynamoDB: {emulator_label(s.dynamodb)} on the same cores; "
        "shadowproxy writes PostgreSQL, then DynamoDB (intent and read-back in a Redis repair "
        "log) and answers after PostgreSQL plus at most "
        f"`secondary_write_budget_seconds` = {writes['secondary_write_budget_seconds']:g} s"
        + (f", median of {rounds} interleaved rounds" if rounds > 1 else "")
        + ":",
        "",
        "| system | rps | p50 ms | p99 ms | rps vs write baseline | non-2xx "
        "| DynamoDB writes per write | secondary write failures | CPU µs/request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    disturbed = errors = False
    for phase in WRITE_PHASES:
        f = summary.get(phase)
        if f is None:
            continue
        mark = " (!)" if f.disturbed_rounds else ""
        disturbed |= bool(f.disturbed_rounds)
        errors |= bool(f.non_2xx)
        if phase in BASELINES:
            ratio, per_write, failed = "1.00", "-", "-"
        else:
            ratio = "-" if r.get(phase) is None else f"{r[phase]:.2f}"
            per_write = (
                "-" if f.dynamodb_writes_per_request is None
                else f"{f.dynamodb_writes_per_request:.2f}"
            )  # fmt: skip
            failed = f"{f.dual_write_failures:,}"
        non_2xx = f"**{f.non_2xx:,}**" if f.non_2xx else "0"
        cpu_per_request = cpu_cell(f.sut_cpu_us_per_request)
        lines.append(
            f"| {SHORT_LABELS[phase]}{mark} | {f.rps:,.0f} | {f.p50_ms:.2f} | {f.p99_ms:.2f} "
            f"| {ratio} | {non_2xx} | {per_write} | {failed} | {cpu_per_request} |"
        )
    lines += [
        "",
        "CPU µs/request: CPU time of the system under test (all its processes) per request,",
        "DynamoDB writes finished after the run included.",
    ]
    emulator_cpu = [
        f"~{f.dynamodb_cpu_us_per_write:,.0f} µs"
        for f in summary.values()
        if f.dynamodb_cpu_us_per_write is not None
    ]
    if emulator_cpu:
        lines.append(
            f"The DynamoDB emulator ({s.dynamodb}) used per client write: {emulator_cpu[0]}."
        )
    if errors:
        lines += ["", "**Some responses were not 2xx: these write figures are worthless.**"]
    if disturbed:
        lines.append(
            "(!) other processes used more than the allowed share of the CPUs during the run."
        )
    return "\n".join(lines)


def target_lines(r: dict[str, float | None], costs: dict[str, float | None]) -> list[str]:
    """Each store-mode target, its measured value, and whether it was met."""
    lines = []
    for phase, least in MIN_RATIO.items():
        value = r.get(phase)
        measured = "not measured" if value is None else (
            f"{value:.2f}x, " + ("met" if value >= least else "MISSED")
        )  # fmt: skip
        lines.append(f"{phase} >= {least}x the baseline's rps: {measured}")
    cost = costs.get("shadow100")
    measured = "not measured" if cost is None else (
        f"{cost:,.0f} µs, " + ("met" if cost <= MAX_CPU_US_PER_SHADOW_READ else "MISSED")
    )  # fmt: skip
    lines.append(
        f"proxy CPU per shadow read (shadow100) <= {MAX_CPU_US_PER_SHADOW_READ:.0f} µs: {measured}"
    )
    return lines


def environment(s: Settings, users: int, phases: Sequence[str] = ()) -> dict[str, Any]:
    def version(cmd: list[str]) -> str:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired, IndexError):
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        return "?"

    cpu = cpu_model()
    try:
        import uvloop

        loop = f"uvloop {uvloop.__version__}"
    except ImportError:
        loop = "asyncio"
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "event_loop": loop,
        "wrk": version(["wrk", "-v"]),
        "postgres": version(["psql", "--version"]),
        "git_commit": version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "dynamodb": emulator_label(s.dynamodb),
        "workers": s.workers,
        "users": users,
    } | ({"redis": version(["redis-server", "--version"])} if "write_dual" in phases else {})


def reproduce_command(args: argparse.Namespace) -> str:
    parts = [
        ".venv/bin/python tests/benchmarks/store_proxy.py",
        f"--duration {args.duration:g}",
        f"--connections {args.connections}",
        f"--users {args.users}",
        f"--workers {args.workers}",
    ]
    if args.rounds != 1:
        parts.append(f"--rounds {args.rounds}")
    if args.phases != list(READ_PHASES):  # the default
        parts.append(f"--phases {','.join(args.phases)}")
    if args.dynamodb != EMULATORS[0]:  # dynalite is the default wherever Node is installed
        parts.append(f"--dynamodb {args.dynamodb}")
    return " ".join(parts)


def report(args: argparse.Namespace, s: Settings, rounds: Rounds, failures: list[str]) -> None:
    summary = summarize(rounds)
    r, per_round = ratios(rounds)
    print(f"\n== summary{' (medians over rounds)' if len(rounds) > 1 else ''}")
    print(f"  DynamoDB: {emulator_label(s.dynamodb)}")
    writes = write_settings()
    for phase, f in summary.items():
        line = f"  {PHASE_LABELS[phase]:55s} {f.rps:9,.0f} rps  p50 {f.p50_ms:7.3f} ms  "
        line += f"p99 {f.p99_ms:7.3f} ms"
        if phase in BASELINE_OF:
            ratio = r.get(phase)
            line += f"  {'-' if ratio is None else f'{ratio:.3f}'}x {BASELINE_OF[phase]}"
        print(line)
        if phase in WRITE_PHASES:
            summarize_writes(phase, f, writes, s.dynamodb)
        elif phase != "baseline":
            outcomes = ", ".join(f"{k} {v:,}" for k, v in sorted(f.comparisons.items()))
            print(
                f"  {'':55s} comparisons {sum(f.comparisons.values()):,} ({outcomes or 'none'}), "
                f"dropped {f.shadow_dropped:,}, of {f.requests:,} requests"
            )
            if f.dynamodb_cpu_us_per_shadow_read is not None:
                print(
                    f"  {'':55s} {s.dynamodb} CPU per shadow read "
                    f"{f.dynamodb_cpu_us_per_shadow_read:,.0f} µs"
                )
    if len(rounds) > 1:
        print(f"  per-round ratios: {per_round}")
    costs = shadow_costs(rounds)
    for phase, cost in costs.items():
        if cost is not None:
            print(
                f"  {phase}: proxy CPU per completed shadow read (DynamoDB get + compare + "
                f"publish) ~ {cost:,.0f} µs (vs shadow0, same round)"
            )
    if set(args.phases) & set(READ_PHASES):
        for line in target_lines(r, costs):
            print(f"  target: {line}")
    env = environment(s, args.users, args.phases)
    table = markdown(summary, r, s, writes, costs)
    command = reproduce_command(args)
    redis_version = f"; {env['redis']}" if "redis" in env else ""
    print(
        f"\n== Markdown ({env['cpus']} CPUs, {env['cpu_model']}; Python {env['python']}, "
        f"{env['event_loop']}; {env['postgres']}; {env['wrk']}; DynamoDB {env['dynamodb']}"
        f"{redis_version})\n"
    )
    print(table)
    print(f"\nReproduce: {command}")
    if failures:
        print("\nFAILED: " + "; ".join(failures))
    if args.json:
        doc = {
            "environment": env,
            "command": command,
            "settings": asdict(s) | {"users": args.users, "rounds": args.rounds},
            "summary": {ph: asdict(f) for ph, f in summary.items()},
            "ratios_vs_baseline_rps": r,
            "ratios_per_round": per_round,
            "proxy_cpu_us_per_shadow_read": costs,
            "targets": {
                "min_ratio_vs_baseline_rps": MIN_RATIO,
                "max_proxy_cpu_us_per_shadow_read": MAX_CPU_US_PER_SHADOW_READ,
            },
            **({"writes": writes} if set(args.phases) & set(WRITE_PHASES) else {}),
            "rounds": [
                {phase: asdict(run) for phase, run in results.items()} for results in rounds
            ],
            "failures": failures,
            "markdown": table,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nwrote {args.json}")


def summarize_writes(phase: str, f: Figures, writes: dict[str, float], emulator: str) -> None:
    pad = " " * 58  # under the figures, as the read phases' second lines
    if f.non_2xx:
        print(f"{pad}!!! {f.non_2xx:,} responses NOT 2xx (warm-ups included): WORTHLESS")
    else:
        print(f"{pad}non-2xx responses: 0 (warm-ups included), of {f.requests:,} requests")
    if phase != "write_dual":
        return
    per_write = f.dynamodb_writes_per_request
    print(
        f"{pad}secondary_write_budget_seconds {writes['secondary_write_budget_seconds']:g}; "
        f"DynamoDB writes per write {'-' if per_write is None else f'{per_write:.3f}'}, "
        f"mean {'-' if f.secondary_ms is None else f'{f.secondary_ms:.2f}'} ms; "
        f"secondary write failures {f.dual_write_failures:,}"
    )
    left = ", ".join(f"{k} {v:,}" for k, v in f.repair_log.items()) or "?"
    unsettled = f"; NOT settled after {f.unsettled_runs} run(s)" if f.unsettled_runs else ""
    print(f"{pad}repair log after the last run: {left}{unsettled}")
    if f.dynamodb_cpu_us_per_write is not None:
        print(f"{pad}{emulator} CPU per client write {f.dynamodb_cpu_us_per_write:,.0f} µs")


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Needs wrk (apt-get install -y wrk) and PostgreSQL on 127.0.0.1:5432.",
    )
    p.add_argument("--duration", type=float, default=10, help="seconds per measured run (10)")
    p.add_argument("--warmup", type=float, default=3, help="seconds per warm-up run (3)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    p.add_argument("--users", type=int, default=2000, help="users seeded in both stores (2000)")
    p.add_argument("--workers", type=int, default=1, help="processes of each system under test (1)")
    p.add_argument("--rounds", type=int, default=1, help="repeat all phases, interleaved (1)")
    p.add_argument(
        "--phases",
        default=",".join(READ_PHASES),
        help=f"comma-separated phases of {','.join(PHASES)}, or reads (the default: "
        f"{','.join(READ_PHASES)}), writes ({','.join(WRITE_PHASES)}), all",
    )
    p.add_argument(
        "--dsn",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL to create the benchmark table in",
    )
    p.add_argument(
        "--max-background",
        type=float,
        default=10,
        help="CPU %% used by other processes above which a run waits, then warns (10)",
    )
    p.add_argument(
        "--quiet-timeout",
        type=float,
        default=60,
        help="seconds to wait for the machine to go quiet before each run (60)",
    )
    p.add_argument(
        "--wait-other",
        type=float,
        default=1800,
        help="seconds to wait while tests/benchmarks/http_proxy.py runs (1800; 0: no wait)",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=2,
        help="measure a phase again, up to this many times, when its run was disturbed (2)",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=60,
        help="seconds to wait for the shadow queue to drain (and, write_dual, the write "
        "intents to settle) after a run (60)",
    )
    p.add_argument(
        "--dynamodb",
        choices=EMULATORS,
        help="the DynamoDB endpoint: dynalite (Node.js, installed on first use into "
        ".bench-cache/dynalite; the default when node and npm are on PATH) or moto "
        "(moto's server; the default otherwise)",
    )
    p.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    args = p.parse_args(argv)
    chosen: list[str] = []
    for name in (x.strip() for x in args.phases.split(",")):
        chosen += [ph for ph in PHASE_GROUPS.get(name, (name,) if name else ()) if ph not in chosen]
    args.phases = chosen
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        p.error(
            f"unknown phase(s) {sorted(unknown)}; choose from {','.join(PHASES)} "
            f"or {', '.join(PHASE_GROUPS)}"
        )
    if args.users < 1 or args.workers < 1 or args.rounds < 1 or args.connections < 1:
        p.error("--users, --workers, --rounds and --connections must be at least 1")
    if args.dynamodb is None:
        args.dynamodb, args.dynamodb_why = default_emulator()
    else:
        args.dynamodb_why = "--dynamodb"
    return args


def default_emulator() -> tuple[str, str]:
    """dynalite where Node.js can run it, else moto; and why."""
    missing = [tool for tool in ("node", "npm") if not shutil.which(tool)]
    if missing:
        return "moto", f"default: {' and '.join(missing)} not on PATH, so no dynalite"
    return "dynalite", "default: node and npm are on PATH"


def with_application_name(dsn: str, name: str) -> str:
    return dsn + ("&" if "?" in dsn else "?") + f"application_name={name}"


async def check_postgres(dsn: str) -> None:
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as e:
        raise BenchError(f"no PostgreSQL answers on {dsn}: {e}") from e
    await conn.close()


def start_dynamodb(emulator: str, port: int, procs: Processes) -> str:
    """Start the DynamoDB emulator (process name ``dynamodb``) on `port`; its endpoint URL."""
    if emulator == "dynalite":
        cmd = [
            node_path(),
            str(install_dynalite()),
            "--host", "127.0.0.1",
            "--port", str(port),
            "--createTableMs", "0",
            "--deleteTableMs", "0",
            "--updateTableMs", "0",
        ]  # fmt: skip
        # dynalite answers a bare GET / with 200 ("healthy: ..."), moto with 404 (no service
        # named): either means it is up.
    else:
        cmd = [sys.executable, str(HELPERS / "moto_server.py"), "--port", str(port)]
    proc = procs.start(DYNAMODB, cmd)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/", proc, 60, f"{emulator} server", procs, DYNAMODB,
               ok=(200, 400, 403, 404))  # fmt: skip
    return url


def node_path() -> str:
    node = shutil.which("node")
    if node is None:
        raise BenchError(
            "--dynamodb dynalite needs Node.js (node and npm on PATH); or --dynamodb moto"
        )
    return node


def installed_dynalite() -> str | None:
    """The version of dynalite in DYNALITE_DIR, None when it is not (fully) installed."""
    if not DYNALITE_CLI.exists():
        return None
    try:
        meta = json.loads((DYNALITE_CLI.parent / "package.json").read_text())
    except (OSError, ValueError):
        return None
    return str(meta.get("version")) if isinstance(meta, dict) else None


def install_dynalite() -> Path:
    """dynalite's cli.js, installed with npm into the git-ignored cache the first time."""
    node_path()
    if installed_dynalite() == DYNALITE_VERSION:
        return DYNALITE_CLI
    npm = shutil.which("npm")
    if npm is None:
        raise BenchError("--dynamodb dynalite needs npm on PATH to install dynalite")
    DYNALITE_DIR.mkdir(parents=True, exist_ok=True)
    spec = f"dynalite@{DYNALITE_VERSION}"
    where = DYNALITE_DIR.relative_to(REPO)
    print(f"installing {spec} into {where} (once) ...", flush=True)
    cmd = [npm, "install", "--no-audit", "--no-fund", "--prefix", str(DYNALITE_DIR), spec]
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=600, cwd=REPO, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"npm install {spec} did not finish within 600s") from e
    tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-30:])
    if out.returncode != 0:
        raise BenchError(f"npm install {spec} failed (exit {out.returncode}):\n{tail}")
    if installed_dynalite() != DYNALITE_VERSION:
        raise BenchError(f"npm install {spec} left no {DYNALITE_CLI}:\n{tail}")
    return DYNALITE_CLI


@functools.cache
def emulator_label(emulator: str) -> str:
    """The emulator with its version, for the report ("dynalite 4.0.0 (Node v20.1.0)")."""
    if emulator == "dynalite":
        node = "?"
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            node = subprocess.run(
                ["node", "--version"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        return f"dynalite {installed_dynalite() or '?'} (Node {node})"
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return f"moto {package_version('moto')} (server)"
    except PackageNotFoundError:
        return "moto ? (server)"


def run(args: argparse.Namespace, s: Settings, tmp: Path, procs: Processes) -> int:
    if not shutil.which("wrk"):
        raise BenchError("wrk is missing: apt-get install -y wrk")
    asyncio.run(check_postgres(args.dsn))
    redis_pids = check_redis() if "write_dual" in args.phases else frozenset()
    wait_for_other_benchmark(s.wait_other)
    print(f"DynamoDB: {args.dynamodb} ({args.dynamodb_why})", flush=True)
    if args.dynamodb == "dynalite":
        install_dynalite()
    proxy_port, admin_port, baseline_port, dynamodb_port = free_ports(4)
    table = f"shadowproxy_bench_{uuid.uuid4().hex[:10]}"
    writing = bool(set(args.phases) & set(WRITE_PHASES))
    write_table = f"{table}_writes" if writing else None
    repair_stream = f"shadowproxy:bench:{table}"
    raw = yaml.safe_load((REPO / "config" / "users.yaml").read_text())
    dynamodb_url: str | None = None
    try:
        dynamodb_url = start_dynamodb(args.dynamodb, dynamodb_port, procs)
        env = Env(
            tmp=tmp,
            dsn=args.dsn,
            sut_dsn=with_application_name(args.dsn, table),
            table=table,
            dynamodb_url=dynamodb_url,
            proxy_port=proxy_port,
            admin_port=admin_port,
            baseline_port=baseline_port,
            ids_file=tmp / "ids.txt",
            sample_id="",
            get_sql=get_sql(table),
            pool_max=int(raw["backends"]["rds"].get("pool_max", 10)),
            write_table=write_table,
            writes_file=tmp / "writes.txt",
            repair_stream=repair_stream,
            redis_pids=redis_pids,
        )
        print(
            f"stores: PostgreSQL {args.dsn.split('@')[-1]} table {table}, "
            f"DynamoDB ({emulator_label(args.dynamodb)}) {dynamodb_url}; "
            f"seeding {args.users:,} users into both ...",
            flush=True,
        )
        started = time.monotonic()
        ids = asyncio.run(setup_stores(env, args.users))
        env.ids_file.write_text("\n".join(ids) + "\n")
        env = dataclasses.replace(env, sample_id=ids[0])
        print(f"  seeded in {time.monotonic() - started:.1f}s; query: {env.get_sql}", flush=True)
        if write_table is not None:
            started = time.monotonic()
            print(f"  write phases: tables {write_table}, seeding the same users ...", flush=True)
            if asyncio.run(setup_stores(env, args.users, write_table)) != ids:
                raise BenchError("the write tables were seeded with other ids")
            lines = write_requests(args.users)
            env.writes_file.write_text("\n".join(lines) + "\n")
            budget = write_settings()["secondary_write_budget_seconds"]
            print(
                f"  seeded in {time.monotonic() - started:.1f}s; {len(lines):,} write requests "
                f"(PUT share {PUT_SHARE:g}); secondary_write_budget_seconds {budget:g}"
                + (
                    f"; repair log: Redis stream {repair_stream}"
                    if "write_dual" in args.phases
                    else ""
                ),
                flush=True,
            )
        print(
            f"  {s.workers} process(es) per system; asyncpg pool max {env.pool_max} per process",
            flush=True,
        )
        rounds: Rounds = []
        failures: list[str] = []
        for n in range(args.rounds):
            results: dict[str, RunResult] = {}
            for phase in (p for p in PHASES if p in args.phases):
                print(f"\n== {PHASE_LABELS[phase]} (round {n + 1}/{args.rounds})", flush=True)
                try:
                    results[phase] = run_phase(phase, s, env, procs)
                except BenchError as e:
                    print(f"  ! {phase} failed: {e}", flush=True)
                    failures.append(f"{phase} (round {n + 1}): {str(e).splitlines()[0]}")
                    continue
                done = results[phase]
                if phase in WRITE_PHASES and (done.wrk.non_2xx or done.warmup_non_2xx):
                    failures.append(
                        f"{phase} (round {n + 1}): {done.wrk.non_2xx:,} of "
                        f"{done.wrk.requests:,} responses not 2xx (warm-up: "
                        f"{done.warmup_non_2xx:,})"
                    )
            rounds.append(results)
    finally:
        with signals_ignored():
            # The systems under test first (they hold pool connections), then the tables
            # (DynamoDB's while the emulator still runs), then the emulator.
            procs.stop_all(keep=(DYNAMODB,))
            for name in (table, write_table):
                if name is not None:
                    for line in asyncio.run(drop_tables(args.dsn, name, dynamodb_url)):
                        print(f"  {line}", flush=True)
            if "write_dual" in args.phases:
                print(f"  {delete_repair_log(repair_stream)}", flush=True)
            procs.stop_all()
    report(args, s, rounds, failures)
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    s = Settings(
        duration=args.duration,
        warmup=args.warmup,
        connections=args.connections,
        threads=args.threads,
        workers=args.workers,
        max_background=args.max_background,
        quiet_timeout=args.quiet_timeout,
        drain_timeout=args.drain_timeout,
        wait_other=args.wait_other,
        retries=args.retries,
        dynamodb=args.dynamodb,
    )
    # Ctrl-C / SIGINT always interrupts (a shell starts background jobs with SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    tmp = Path(tempfile.mkdtemp(prefix="shadowproxy-store-bench-"))
    procs = Processes(tmp)
    try:
        with terminate_on_sigterm():
            return run(args, s, tmp, procs)
    except BenchError as e:
        print(f"\nbenchmark failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; all benchmark processes stopped, tables dropped", file=sys.stderr)
        return 130
    finally:
        with signals_ignored():
            procs.stop_all()
        if args.keep_tmp:
            print(f"temp dir kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
