"""Benchmark: shadowproxy in front of a fast static upstream, against nginx `mirror`.

Not a test: nothing here asserts speed. One run measures, with wrk, on 127.0.0.1 (phase names
as accepted by ``--phases``):

- ``direct``             wrk -> upstream nginx (a ~1 KB JSON body on /users/42)
- ``proxy``              wrk -> ``shadowproxy serve --workers N`` -> upstream; the route has no
                         shadow at all
- ``proxy-shadow``       the same, every request also shadowed to a second upstream port and
                         compared (status, content-type, JSON body: they match)
- ``proxy-mismatch``     the same, but the shadow's body differs in a few fields on every
                         request: each comparison is a mismatch (what a broken candidate
                         costs the primary path; the diff budget is what bounds it)
- ``nginx-mirror``       the peer anchor: wrk -> nginx ``proxy_pass`` + ``mirror``, ``upstream``
                         blocks with ``keepalive 64``, HTTP/1.1, ``Connection ""``
- ``nginx-mirror-close`` the same, but the mirror subrequests send ``Connection: close``. On this
                         machine that was as fast or faster than keepalive, whose mirror
                         connections showed 30-100 ms stalls; both are measured so that the
                         ratio is also reported against the faster nginx

each twice: closed loop at maximum throughput (``--connections``), then at a fixed moderate rate
(``--rate``), each measured run preceded by a warm-up run. It prints rps, p50 and p99 per run,
the ratios the project targets, and a Markdown table for the README; ``--json FILE`` also writes
every figure to a file. ``--rounds N`` repeats all phases N times, interleaved, and reports
medians (ratios are taken within each round, then the median).

Usage (from the repository root; needs ``apt-get install -y wrk nginx-light``)::

    .venv/bin/python tests/benchmarks/http_proxy.py [--duration 10] [--connections 64]
        [--rate 1000] [--workers 2] [--rounds 1] [--json bench.json]

Fairness: every system under test gets ``--workers`` processes (shadowproxy ``--workers``,
nginx ``worker_processes``); the upstream nginx, shared by all runs, gets ``--upstream-workers``
(default: the same; in ``direct`` it is the system under test). wrk runs one thread. Nothing is
pinned unless ``--wrk-cpus`` / ``--sut-cpus`` / ``--upstream-cpus`` say so (``taskset -c``): on a
2-core machine wrk and the upstream share the cores with the system under test, the same way in
every run, so the max-rps figures are "whole machine" figures, not per-core capacity.

Each run reports where the CPU went (cores used by the system under test, the upstream, wrk,
interrupts, and other processes). Before each run the script waits (``--quiet-timeout``) until
other processes use at most ``--max-background`` % of the CPUs, and flags a run as disturbed,
with ``(!)`` in the table, when they used more during it.

Fixed rate: Debian's wrk 4 has no wrk2 ``-R``, so ``wrk/paced.lua`` paces requests with wrk's
Lua ``delay()`` hook against an absolute per-thread schedule of send slots (see that file). The
offered rate therefore stays constant while any connection is free; the run reports how many
slots were sent late (> 1 ms), which would mean the rate was not held. Latency is measured by
wrk from the moment each request is written.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
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
    terminate_on_sigterm,
    wait_ready,
    wrk_report,
)

TEMPLATES = HERE / "templates"
WRK_SCRIPTS = HERE / "wrk"
REQUEST_PATH = "/users/42"

P99_TARGET_MS = 1.0
MIRROR_RATIO_TARGET = 0.8
MISMATCH_TARGET = 0.9  # a shadow mismatching on every request costs <= 10% of throughput

PHASES = (
    "direct", "proxy", "proxy-shadow", "proxy-mismatch", "nginx-mirror", "nginx-mirror-close"
)  # fmt: skip
MISMATCH_PATH = "/differs"  # the shadow's base path in proxy-mismatch: another body
PHASE_LABELS = {
    "direct": "direct: wrk -> nginx upstream",
    "proxy": "shadowproxy, no shadow",
    "proxy-shadow": "shadowproxy, 100% shadow + compare",
    "proxy-mismatch": "shadowproxy, 100% shadow + compare, every one a mismatch",
    "nginx-mirror": "nginx proxy_pass + mirror, keepalive to both",
    "nginx-mirror-close": "nginx proxy_pass + mirror, shadow Connection: close",
}
MIRRORS = {"nginx-mirror": "", "nginx-mirror-close": "close"}


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
    paced_slots: int
    paced_late_over_1ms: int
    paced_late_max_ms: float

    @classmethod
    def from_report(cls, report: dict[str, Any]) -> WrkResult:
        lat = report["latency_us"]
        duration_s = report["duration_us"] / 1e6
        paced = report["paced"]
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
            paced_slots=paced["slots"],
            paced_late_over_1ms=paced["late_over_1ms"],
            paced_late_max_ms=round(paced["late_max_ms"], 3),
        )


@dataclass
class RunResult:
    """One measured wrk run plus what the upstreams and the proxy saw during it."""

    wrk: WrkResult
    upstream_requests: int
    shadow: dict[str, float] = field(default_factory=dict)
    cpu: CpuUse | None = None
    disturbed: bool = False  # other processes used more than --max-background during the run
    sut: str = ""  # process group of the system under test, as named in cpu.processes

    @property
    def upstream_per_request(self) -> float:
        return self.upstream_requests / self.wrk.requests if self.wrk.requests else 0.0

    @property
    def sut_cpu_us_per_request(self) -> float | None:
        """CPU time the system under test spent per request: steadier than rps when the
        machine is shared, and what the proxy's own optimisations move."""
        if self.cpu is None or self.sut not in self.cpu.processes or not self.wrk.requests:
            return None
        cores = self.cpu.processes[self.sut]
        return round(cores * self.wrk.duration_s * 1e6 / self.wrk.requests, 1)


@dataclass
class PhaseResult:
    closed: RunResult | None = None
    paced: RunResult | None = None


# --------------------------------------------------------------------------- processes


def taskset(cpus: str | None, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", cpus, *cmd] if cpus else cmd


# --------------------------------------------------------------------------- configs


def user_body() -> str:
    """A ~1 KB JSON user record (no quote, backslash or `$`, so nginx can `return` it)."""
    record = {
        "id": 42,
        "email": "ada.lovelace@example.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "status": "active",
        "plan": "enterprise",
        "created_at": "2019-03-14T09:26:53Z",
        "updated_at": "2024-11-02T17:45:10Z",
        "balance": 1234.56,
        "verified": True,
        "locale": "en-GB",
        "timezone": "Europe/London",
        "tags": ["beta", "mathematics", "analytical-engine", "poetry", "early-adopter"],
        "address": {
            "line1": "12 St James Square",
            "line2": "Flat 3",
            "city": "London",
            "postcode": "SW1Y 4JH",
            "country": "GB",
        },
        "phones": [
            {"kind": "mobile", "number": "+44 7700 900123", "primary": True},
            {"kind": "work", "number": "+44 20 7946 0958", "primary": False},
        ],
        "preferences": {"newsletter": True, "sms": False, "theme": "dark", "digest": "weekly"},
        "orders": [
            {
                "id": 9000 + i,
                "total": round(19.99 * (i + 1), 2),
                "currency": "GBP",
                "placed_at": f"2024-0{i + 1}-1{i}T10:00:00Z",
                "items": i + 1,
            }
            for i in range(5)
        ],
    }
    body = json.dumps(record, separators=(",", ":"))
    assert not set(body) & {"'", "\\", "$"}, "body must be safe inside an nginx '...' string"
    return body


def differing_body() -> str:
    """The user body with three fields changed: a mismatch on every comparison."""
    record = json.loads(user_body())
    record["first_name"] = "Augusta"
    record["balance"] = 1234.57
    record["orders"][2]["total"] = 0.0
    return json.dumps(record, separators=(",", ":"))


def render(template: str, dest: Path, **values: object) -> Path:
    text = (TEMPLATES / template).read_text()
    for key, value in values.items():
        text = text.replace(f"@@{key.upper()}@@", str(value))
    leftover = re.findall(r"@@\w+@@", text)
    if leftover:
        raise BenchError(f"{template}: unfilled placeholders {sorted(set(leftover))}")
    dest.write_text(text)
    return dest


@dataclass(frozen=True)
class Ports:
    primary: int
    shadow: int
    status: int
    mirror: int
    proxy: int
    admin: int

    @classmethod
    def pick(cls) -> Ports:
        return cls(*free_ports(6))


def proxy_config(tmp: Path, ports: Ports, *, shadow: bool, mismatch: bool = False) -> Path:
    """The shadowproxy YAML (written as JSON, which YAML loaders read)."""
    route: dict[str, Any] = {
        "name": "users",
        "path": "/users/*",
        "methods": ["GET", "HEAD"],
        "primary": "primary",
    }
    if shadow:
        route |= {"shadow": "shadow", "sample": 1.0, "compare": {"headers": ["content-type"]}}
    config = {
        "listen": {"host": "127.0.0.1", "port": ports.proxy},
        "admin": {"host": "127.0.0.1", "port": ports.admin},
        "logging": {"level": "WARNING", "access_log": False},
        "backends": {
            "primary": {
                "kind": "http",
                "url": f"http://127.0.0.1:{ports.primary}",
                "timeout_seconds": 5,
                "max_connections": 256,
            },
            "shadow": {
                "kind": "http",
                "url": f"http://127.0.0.1:{ports.shadow}{MISMATCH_PATH if mismatch else ''}",
                "timeout_seconds": 2,
                "max_connections": 256,
            },
        },
        "routes": [route],
        "shadow": {"queue_size": 1024, "concurrency": 64, "timeout_seconds": 2},
        "sink": {"kind": "jsonl", "path": str(tmp / "mismatches.jsonl")},
        "flags": {"kind": "memory", "audit_path": str(tmp / "flags-audit.jsonl")},
    }
    name = ("proxy-mismatch" if mismatch else "proxy-shadow") if shadow else "proxy"
    path = tmp / f"{name}.yaml"
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


# --------------------------------------------------------------------------- measuring


def run_wrk(
    url: str,
    *,
    duration: float,
    connections: int,
    threads: int,
    rate: float | None,
    tmp: Path,
    procs: Processes,
    cpus: str | None,
) -> WrkResult:
    script = tmp / ("wrk-paced.lua" if rate else "wrk-closed.lua")
    if not script.exists():
        parts = ["paced.lua", "report.lua"] if rate else ["report.lua"]
        script.write_text("\n".join((WRK_SCRIPTS / p).read_text() for p in parts))
    env = dict(os.environ, BENCH_RATE=str(rate or 0), BENCH_THREADS=str(threads))
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "--timeout",
        "2s",
        "-s",
        str(script),
        url,
    ]
    report = wrk_report(procs, taskset(cpus, cmd), log=tmp / "wrk.log", duration=duration, env=env)
    return WrkResult.from_report(report)


def upstream_requests(ports: Ports) -> int:
    """Total requests the upstream nginx has handled so far (stub_status, all server blocks)."""
    status, body = http_get(f"http://127.0.0.1:{ports.status}/nginx_status")
    if status != 200:
        raise BenchError(f"upstream stub_status answered {status}")
    # "server accepts handled requests\n A H R"
    numbers = body.decode().split("\n")[2].split()
    return int(numbers[2])


METRIC_LINE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")


def proxy_shadow_counters(ports: Ports) -> dict[str, float]:
    """Comparison outcomes and shadow drops from the proxy's /metrics (empty if unavailable)."""
    try:
        status, body = http_get(f"http://127.0.0.1:{ports.admin}/metrics", timeout=5.0)
    except OSError:
        return {}
    if status != 200:
        return {}
    counters: dict[str, float] = {}
    for line in body.decode(errors="replace").splitlines():
        m = METRIC_LINE.match(line)
        if not m:
            continue
        name, labels, value = m["name"], m["labels"] or "", float(m["value"])
        if name == "shadowproxy_comparisons_total":
            outcome = re.search(r'outcome="([^"]*)"', labels)
            key = f"comparisons.{outcome.group(1) if outcome else '?'}"
            counters[key] = counters.get(key, 0.0) + value
        elif name == "shadowproxy_shadow_dropped_total":
            counters["shadow_dropped"] = counters.get("shadow_dropped", 0.0) + value
    return counters


def counter_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


@dataclass(frozen=True)
class Settings:
    duration: float
    warmup: float
    connections: int
    threads: int
    rate: float
    rate_connections: int
    wrk_cpus: str | None
    max_background: float
    quiet_timeout: float


CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSample:
    stat: list[int]  # /proc/stat "cpu": user nice system idle iowait irq softirq steal
    groups: dict[str, int]  # CPU ticks used so far, by name of the process group
    children_s: float  # CPU seconds of waited-for children (wrk, once it has exited)


@dataclass(frozen=True)
class CpuUse:
    """CPU used between two samples, in cores (1.0 = one core busy the whole time)."""

    cpus: int
    busy: float
    processes: dict[str, float]  # ours, by process group, and "wrk"
    other: float  # user+system time of processes that are not ours
    irq: float  # hard+soft interrupts: mostly the loopback TCP traffic
    steal: float  # taken by the hypervisor


def cpu_sample(groups: dict[str, int]) -> CpuSample:
    """Machine CPU counters plus the CPU time of the named process groups (name -> pgid)."""
    stat = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    by_pgid = {pgid: name for name, pgid in groups.items()}
    ticks = dict.fromkeys(groups, 0)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # fields after "pid (comm)"
        name = by_pgid.get(int(fields[2]))  # pgrp
        if name is not None:
            ticks[name] += int(fields[11]) + int(fields[12])  # utime + stime
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return CpuSample(stat, ticks, usage.ru_utime + usage.ru_stime)


def cpu_use(a: CpuSample, b: CpuSample) -> CpuUse:
    d = [y - x for x, y in zip(a.stat, b.stat, strict=True)]
    cpus = os.cpu_count() or 1
    elapsed = max(sum(d) / cpus, 1e-9)  # ticks of one CPU
    ours = {n: b.groups[n] - a.groups[n] for n in b.groups if n in a.groups}
    ours["wrk"] = round((b.children_s - a.children_s) * CLK_TCK)
    tasks = d[0] + d[1] + d[2]
    return CpuUse(
        cpus=cpus,
        busy=round((sum(d) - d[3] - d[4]) / elapsed, 2),
        processes={n: round(t / elapsed, 2) for n, t in ours.items()},
        other=round(max(0, tasks - sum(ours.values())) / elapsed, 2),
        irq=round((d[5] + d[6]) / elapsed, 2),
        steal=round(d[7] / elapsed, 2),
    )


def other_load(procs: Processes, seconds: float = 1.0) -> float:
    """Share (%) of all CPUs used by processes that are not ours over `seconds`."""
    before = cpu_sample(procs.running())
    time.sleep(seconds)
    use = cpu_use(before, cpu_sample(procs.running()))
    return round(100 * use.other / use.cpus, 1)


OTHER_BENCHMARKS = ("store_proxy.py", "bench_compare.py")


def _start_ticks(pid: int) -> int:
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rindex(")") + 2 :].split()[19])  # starttime


def older_benchmarks() -> list[int]:
    """Pids of the repository's other benchmarks that started before this one. Only older ones
    count, so two benchmarks started together cannot wait for each other."""
    mine = _start_ticks(os.getpid())
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in (os.getpid(), os.getppid()):
            continue
        try:
            argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
            is_bench = any(a.decode(errors="replace").endswith(OTHER_BENCHMARKS) for a in argv[:3])
            if is_bench and _start_ticks(int(entry.name)) < mine:
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return sorted(found)


def wait_for_older_benchmarks(timeout: float) -> None:
    """Two benchmarks on 2 cores ruin each other's figures: let an older one finish first."""
    pids = older_benchmarks()
    if not pids or timeout <= 0:
        return
    print(f"another benchmark is running (pids {pids}); waiting up to {timeout:.0f}s", flush=True)
    deadline = time.monotonic() + timeout
    while older_benchmarks() and time.monotonic() < deadline:
        time.sleep(5)


def wait_for_quiet(procs: Processes, max_pct: float, timeout: float) -> None:
    """Wait (up to `timeout` s) until other processes use at most `max_pct` of the CPUs: on a
    shared 2-core machine, a test suite running next door halves the figures."""
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
    url: str,
    s: Settings,
    *,
    sut: str,
    paced: bool,
    ports: Ports,
    tmp: Path,
    procs: Processes,
    watch_proxy: bool,
) -> RunResult:
    wrk_args: dict[str, Any] = {
        "rate": s.rate if paced else None,
        "connections": s.rate_connections if paced else s.connections,
        "threads": 1 if paced else s.threads,
        "tmp": tmp,
        "procs": procs,
        "cpus": s.wrk_cpus,
    }
    kind = f"fixed {s.rate:g} rps" if paced else f"closed loop, {s.connections} connections"
    wait_for_quiet(procs, s.max_background, s.quiet_timeout)
    print(f"  {kind}: warm-up {s.warmup:g}s ...", flush=True)
    run_wrk(url, duration=s.warmup, **wrk_args)
    time.sleep(1.0)  # lets the shadow queue drain
    before_up = upstream_requests(ports)
    before_px = proxy_shadow_counters(ports) if watch_proxy else {}
    print(f"  {kind}: measuring {s.duration:g}s ...", flush=True)
    before_cpu = cpu_sample(procs.running())
    result = run_wrk(url, duration=s.duration, **wrk_args)
    cpu = cpu_use(before_cpu, cpu_sample(procs.running()))
    time.sleep(0.5)
    run = RunResult(
        wrk=result,
        upstream_requests=upstream_requests(ports) - before_up,
        shadow=counter_delta(before_px, proxy_shadow_counters(ports)) if watch_proxy else {},
        cpu=cpu,
        disturbed=100 * cpu.other / cpu.cpus > s.max_background,
        sut=sut,
    )
    print("    " + describe(run, paced=paced), flush=True)
    if run.disturbed:
        print(
            f"    ! other processes used {cpu.other:.2f} cores "
            f"({100 * cpu.other / cpu.cpus:.0f}% of the CPUs) during this run: "
            "these figures are not trustworthy",
            flush=True,
        )
    return run


def describe(run: RunResult, *, paced: bool) -> str:
    w = run.wrk
    text = (
        f"{w.rps:,.0f} rps  p50 {w.p50_ms:.3f} ms  p99 {w.p99_ms:.3f} ms  "
        f"p99.9 {w.p999_ms:.3f} ms  max {w.max_ms:.1f} ms  "
        f"upstream req/client req {run.upstream_per_request:.2f}"
    )
    if w.errors:
        text += f"  ERRORS {w.errors}"
    if paced:
        text += f"  late slots >1ms {w.paced_late_over_1ms}/{w.paced_slots}"
    if run.shadow:
        text += "\n    proxy: " + ", ".join(f"{k}={v:,.0f}" for k, v in sorted(run.shadow.items()))
    if run.sut_cpu_us_per_request is not None:
        text += f"\n    {run.sut} CPU per request: {run.sut_cpu_us_per_request:.0f} us"
    if run.cpu:
        c = run.cpu
        parts = [f"{n} {v:.2f}" for n, v in c.processes.items()]
        parts += [f"irq {c.irq:.2f}", f"other {c.other:.2f}", f"steal {c.steal:.2f}"]
        text += f"\n    cpu cores used (of {c.cpus}): " + ", ".join(parts)
    return text


# --------------------------------------------------------------------------- systems under test


def start_nginx(
    name: str, conf: Path, procs: Processes, cpus: str | None, ready_url: str
) -> subprocess.Popen[bytes]:
    check = subprocess.run(
        ["nginx", "-t", "-q", "-p", str(conf.parent), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if check.returncode != 0:
        raise BenchError(f"nginx rejected {conf.name}:\n{check.stderr}")
    proc = procs.start(name, taskset(cpus, ["nginx", "-p", str(conf.parent), "-c", str(conf)]))
    wait_ready(ready_url, proc, 10, name, procs, name)
    return proc


def check_shadowproxy() -> str | None:
    """None when `shadowproxy serve --help` works, else why not."""
    try:
        out = subprocess.run(
            [*shadowproxy_command(), "serve", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if out.returncode != 0:
        return (out.stderr or out.stdout).strip()[-1500:]
    return None


def start_shadowproxy(
    config: Path, workers: int, ports: Ports, procs: Processes, cpus: str | None, name: str
) -> subprocess.Popen[bytes]:
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
    # The benchmark's config must be the one measured: drop SHADOWPROXY__* overrides.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHADOWPROXY__")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    cmd = [*shadowproxy_command(), "serve", "-c", str(config), "--workers", str(workers)]
    proc = procs.start(name, taskset(cpus, cmd), env=env)
    wait_ready(f"http://127.0.0.1:{ports.admin}/healthz", proc, 60, "shadowproxy", procs, name)
    return proc


def verify_response(url: str) -> None:
    status, body = http_get(url)
    if status != 200 or body != user_body().encode():
        raise BenchError(f"{url} answered {status} with {len(body)} bytes, not the user body")


# --------------------------------------------------------------------------- reporting


def ratios(results: dict[str, PhaseResult]) -> dict[str, float | None]:
    def rps(phase: str) -> float | None:
        r = results.get(phase)
        return r.closed.wrk.rps if r and r.closed else None

    def paced_p99(phase: str) -> float | None:
        r = results.get(phase)
        return r.paced.wrk.p99_ms if r and r.paced else None

    def div(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    def sub(a: float | None, b: float | None) -> float | None:
        return round(a - b, 3) if a is not None and b is not None else None

    mirrors = [x for x in (rps("nginx-mirror"), rps("nginx-mirror-close")) if x is not None]
    return {
        "proxy_shadow_over_nginx_mirror_rps": div(rps("proxy-shadow"), rps("nginx-mirror")),
        "proxy_shadow_over_best_nginx_mirror_rps": div(
            rps("proxy-shadow"), max(mirrors) if mirrors else None
        ),
        "proxy_over_direct_rps": div(rps("proxy"), rps("direct")),
        "proxy_shadow_over_direct_rps": div(rps("proxy-shadow"), rps("direct")),
        "nginx_mirror_over_direct_rps": div(rps("nginx-mirror"), rps("direct")),
        "proxy_shadow_added_p99_ms": sub(paced_p99("proxy-shadow"), paced_p99("direct")),
        "proxy_mismatch_over_proxy_shadow_rps": div(rps("proxy-mismatch"), rps("proxy-shadow")),
        "proxy_mismatch_added_p99_ms": sub(paced_p99("proxy-mismatch"), paced_p99("proxy-shadow")),
        "proxy_added_p99_ms": sub(paced_p99("proxy"), paced_p99("direct")),
        "nginx_mirror_added_p99_ms": sub(paced_p99("nginx-mirror"), paced_p99("direct")),
        "nginx_mirror_close_added_p99_ms": sub(
            paced_p99("nginx-mirror-close"), paced_p99("direct")
        ),
    }


def verdict(value: float | None, target: float, *, at_least: bool) -> str:
    if value is None:
        return "not measured"
    ok = value >= target if at_least else value <= target
    return "meets target" if ok else "MISSES target"


def markdown(
    summary: dict[str, dict[str, Figures]],
    r: dict[str, float | None],
    s: Settings,
    workers: int,
    rounds: int,
) -> str:
    median = f", median of {rounds} rounds less disturbed runs" if rounds > 1 else ""
    lines = [
        f"| setup ({workers} worker processes each{median}) | max rps | p50 ms | p99 ms "
        f"| CPU us/req | p50 ms @ {s.rate:g} rps | p99 ms @ {s.rate:g} rps |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for phase in PHASES:
        if phase not in summary:
            continue
        c, p = summary[phase].get("closed"), summary[phase].get("paced")
        cm = " (!)" if c and c.disturbed else ""
        pm = " (!)" if p and p.disturbed else ""
        cells = [
            f"{c.rps:,.0f}{cm}" if c else "-",
            f"{c.p50_ms:.2f}" if c else "-",
            f"{c.p99_ms:.2f}" if c else "-",
            f"{c.sut_cpu_us_per_request:.0f}" if c and c.sut_cpu_us_per_request else "-",
            f"{p.p50_ms:.2f}{pm}" if p else "-",
            f"{p.p99_ms:.2f}" if p else "-",
        ]
        lines.append(f"| {PHASE_LABELS[phase]} | " + " | ".join(cells) + " |")

    def fmt(v: float | None, unit: str = "x") -> str:
        return "-" if v is None else (f"{v:.2f}{unit}" if unit == "x" else f"{v:+.2f} {unit}")

    mirror = r["proxy_shadow_over_nginx_mirror_rps"]
    best = r["proxy_shadow_over_best_nginx_mirror_rps"]
    added = r["proxy_shadow_added_p99_ms"]
    costly = r["proxy_mismatch_over_proxy_shadow_rps"]
    lines += [
        "",
        "| ratio | value | target |",
        "|---|---:|---:|",
        f"| shadowproxy+shadow rps / nginx-mirror (keepalive) rps | {fmt(mirror)} "
        f"| >= {MIRROR_RATIO_TARGET}x ({verdict(mirror, MIRROR_RATIO_TARGET, at_least=True)}) |",
        f"| shadowproxy+shadow rps / faster nginx-mirror variant rps | {fmt(best)} "
        f"| >= {MIRROR_RATIO_TARGET}x ({verdict(best, MIRROR_RATIO_TARGET, at_least=True)}) |",
        f"| shadowproxy (no shadow) rps / direct rps | {fmt(r['proxy_over_direct_rps'])} | - |",
        f"| 100% mismatching rps / 100% matching rps | {fmt(costly)} "
        f"| >= {MISMATCH_TARGET}x ({verdict(costly, MISMATCH_TARGET, at_least=True)}) |",
        f"| shadowproxy+shadow added p99 over direct @ {s.rate:g} rps "
        f"| {fmt(added, 'ms')} "
        f"| <= {P99_TARGET_MS:g} ms ({verdict(added, P99_TARGET_MS, at_least=False)}) |",
    ]
    if any(f.disturbed for kinds in summary.values() for f in kinds.values()):
        lines += [
            "",
            f"(!) other processes used more than {s.max_background:g}% of the CPUs during "
            "every such run: the figures are disturbed; rerun on a quiet machine.",
        ]
    lines += [
        "",
        "CPU us/req: CPU time the system under test (the upstream for direct) used per request "
        "at max rps.",
    ]
    return "\n".join(lines)


def environment(workers: int, upstream_workers: int) -> dict[str, Any]:
    def version(cmd: list[str]) -> str:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        return "?"

    cpu = cpu_model()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": version(["nginx", "-v"]),
        "wrk": version(["wrk", "-v"]),
        "git_commit": version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "workers": workers,
        "upstream_workers": upstream_workers,
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Needs wrk and nginx: apt-get install -y wrk nginx-light",
    )
    p.add_argument("--duration", type=float, default=10, help="seconds per measured run (10)")
    p.add_argument("--warmup", type=float, default=3, help="seconds per warm-up run (3)")
    p.add_argument(
        "--connections",
        type=int,
        default=64,
        help="wrk connections for the max-throughput runs (64)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="wrk threads for the max-throughput runs (1: wrk shares the cores)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=1000,
        help="requests/s for the fixed-rate runs (1000); 0 skips them",
    )
    p.add_argument(
        "--rate-connections",
        type=int,
        default=16,
        help="wrk connections for the fixed-rate runs (16)",
    )
    p.add_argument(
        "--workers", type=int, default=2, help="worker processes of each system under test (2)"
    )
    p.add_argument(
        "--upstream-workers",
        type=int,
        default=None,
        help="worker processes of the upstream nginx (default: --workers)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat every phase this many times, interleaved; report medians (1)",
    )
    p.add_argument(
        "--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}"
    )
    p.add_argument("--wrk-cpus", help="taskset -c list for wrk (default: not pinned)")
    p.add_argument("--sut-cpus", help="taskset -c list for shadowproxy / nginx-mirror")
    p.add_argument("--upstream-cpus", help="taskset -c list for the upstream nginx")
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
        help="seconds to wait for the machine to go quiet before each run (60; 0: no wait)",
    )
    p.add_argument(
        "--other-benchmark-timeout",
        type=float,
        default=1800,
        help="seconds to wait for an already running store_proxy.py / bench_compare.py (1800)",
    )
    p.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    args = p.parse_args(argv)
    args.phases = [x.strip() for x in args.phases.split(",") if x.strip()]
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        p.error(f"unknown phase(s) {sorted(unknown)}; choose from {','.join(PHASES)}")
    if args.upstream_workers is None:
        args.upstream_workers = args.workers
    return args


def check_prerequisites(args: argparse.Namespace) -> None:
    missing = [tool for tool in ("wrk", "nginx") if not shutil.which(tool)]
    if missing:
        raise BenchError(
            f"missing {', '.join(missing)} - install with: apt-get install -y wrk nginx-light"
        )
    if (args.wrk_cpus or args.sut_cpus or args.upstream_cpus) and not shutil.which("taskset"):
        raise BenchError("--*-cpus needs taskset (apt-get install -y util-linux)")
    if {"proxy", "proxy-shadow"} & set(args.phases):
        problem = check_shadowproxy()
        if problem:
            raise BenchError(
                f"`{' '.join(shadowproxy_command())} serve --help` does not work "
                f"(try `.venv/bin/pip install -e .`), or pass "
                f"--phases direct,nginx-mirror:\n{problem}"
            )


def start_upstream(args: argparse.Namespace, ports: Ports, tmp: Path, procs: Processes) -> None:
    body = user_body()
    conf = render(
        "upstream.nginx.conf",
        tmp / "upstream.conf",
        workers=args.upstream_workers,
        tmp=tmp,
        primary_port=ports.primary,
        shadow_port=ports.shadow,
        status_port=ports.status,
        body=body,
        differing_body=differing_body(),
    )
    status_url = f"http://127.0.0.1:{ports.status}/nginx_status"
    start_nginx("upstream", conf, procs, args.upstream_cpus, status_url)
    for port in (ports.primary, ports.shadow):
        verify_response(f"http://127.0.0.1:{port}{REQUEST_PATH}")
    print(
        f"upstream nginx: {args.upstream_workers} worker(s), primary :{ports.primary}, "
        f"shadow :{ports.shadow}, body {len(body)} bytes",
        flush=True,
    )


def start_system(
    phase: str, args: argparse.Namespace, ports: Ports, tmp: Path, procs: Processes
) -> tuple[str, subprocess.Popen[bytes] | None]:
    """Start the system under test for `phase`; returns the URL to load and its process."""
    if phase == "direct":
        return f"http://127.0.0.1:{ports.primary}{REQUEST_PATH}", None
    if phase in MIRRORS:
        conf = render(
            "mirror.nginx.conf",
            tmp / f"{phase}.conf",
            workers=args.workers,
            tmp=tmp,
            primary_port=ports.primary,
            shadow_port=ports.shadow,
            listen_port=ports.mirror,
            shadow_connection=MIRRORS[phase],
        )
        url = f"http://127.0.0.1:{ports.mirror}{REQUEST_PATH}"
        return url, start_nginx(phase, conf, procs, args.sut_cpus, url)
    config = proxy_config(
        tmp, ports, shadow=phase in ("proxy-shadow", "proxy-mismatch"),
        mismatch=phase == "proxy-mismatch",
    )  # fmt: skip
    proc = start_shadowproxy(config, args.workers, ports, procs, args.sut_cpus, phase)
    return f"http://127.0.0.1:{ports.proxy}{REQUEST_PATH}", proc


def run_phase(
    phase: str, args: argparse.Namespace, s: Settings, ports: Ports, tmp: Path, procs: Processes
) -> PhaseResult:
    url, proc = start_system(phase, args, ports, tmp, procs)
    try:
        verify_response(url)
        watch = phase.startswith("proxy")
        res = PhaseResult()
        sut = "upstream" if phase == "direct" else phase
        common: dict[str, Any] = {
            "sut": sut,
            "ports": ports,
            "tmp": tmp,
            "procs": procs,
            "watch_proxy": watch,
        }
        res.closed = measure(url, s, paced=False, **common)
        if s.rate > 0:
            res.paced = measure(url, s, paced=True, **common)
        return res
    finally:
        if proc is not None:
            procs.stop(proc)


Rounds = list[dict[str, PhaseResult]]


def run_rounds(
    args: argparse.Namespace, s: Settings, tmp: Path, procs: Processes
) -> tuple[Rounds, list[str]]:
    """Every phase once per round (rounds interleave, so slow drifts hit all systems alike)."""
    ports = Ports.pick()
    start_upstream(args, ports, tmp, procs)
    rounds: Rounds = []
    failures: list[str] = []
    for n in range(args.rounds):
        results: dict[str, PhaseResult] = {}
        for phase in (p for p in PHASES if p in args.phases):
            print(f"\n== {PHASE_LABELS[phase]} (round {n + 1}/{args.rounds})", flush=True)
            try:
                results[phase] = run_phase(phase, args, s, ports, tmp, procs)
            except BenchError as e:
                print(f"  ! {phase} failed: {e}", flush=True)
                failures.append(f"{phase} (round {n + 1}): {str(e).splitlines()[0]}")
        rounds.append(results)
    return rounds, failures


# --------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class Figures:
    """Medians over the rounds of one phase's closed-loop or fixed-rate runs.

    Disturbed runs (other processes busy) are left out while at least one undisturbed run
    exists; `disturbed` says the figures had to come from disturbed runs.
    """

    rps: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    rps_range: tuple[float, float]
    p99_range: tuple[float, float]
    sut_cpu_us_per_request: float | None
    rounds_used: int
    rounds_disturbed: int
    disturbed: bool


def summarize(rounds: Rounds) -> dict[str, dict[str, Figures]]:
    summary: dict[str, dict[str, Figures]] = {}
    for phase in PHASES:
        for kind in ("closed", "paced"):
            runs = [
                run for r in rounds if phase in r if (run := getattr(r[phase], kind)) is not None
            ]
            if not runs:
                continue
            clean = [run for run in runs if not run.disturbed]
            wrk = [run.wrk for run in clean or runs]
            rps = [w.rps for w in wrk]
            p99 = [w.p99_ms for w in wrk]
            cpu = [c for run in clean or runs if (c := run.sut_cpu_us_per_request) is not None]
            summary.setdefault(phase, {})[kind] = Figures(
                rps=round(statistics.median(rps), 1),
                p50_ms=round(statistics.median(w.p50_ms for w in wrk), 3),
                p99_ms=round(statistics.median(p99), 3),
                p999_ms=round(statistics.median(w.p999_ms for w in wrk), 3),
                rps_range=(min(rps), max(rps)),
                p99_range=(min(p99), max(p99)),
                sut_cpu_us_per_request=round(statistics.median(cpu), 1) if cpu else None,
                rounds_used=len(wrk),
                rounds_disturbed=len(runs) - len(clean),
                disturbed=not clean,
            )
    return summary


def undisturbed(results: dict[str, PhaseResult]) -> dict[str, PhaseResult]:
    """The same round with every disturbed run left out."""

    def keep(run: RunResult | None) -> RunResult | None:
        return run if run is not None and not run.disturbed else None

    return {ph: PhaseResult(keep(res.closed), keep(res.paced)) for ph, res in results.items()}


def median_ratios(rounds: Rounds) -> tuple[dict[str, float | None], dict[str, list[float]]]:
    """Each ratio computed within a round (paired), then the median over the rounds; rounds
    where a run it needs was disturbed are left out unless no undisturbed pair exists."""
    clean: dict[str, list[float]] = {}
    every: dict[str, list[float]] = {}
    for results in rounds:
        for into, view in ((clean, undisturbed(results)), (every, results)):
            for key, value in ratios(view).items():
                into.setdefault(key, [])
                if value is not None:
                    into[key].append(value)
    used = {k: clean[k] or every[k] for k in every}
    medians = {k: round(statistics.median(v), 3) if v else None for k, v in used.items()}
    return medians, used


def report(args: argparse.Namespace, s: Settings, rounds: Rounds, failures: list[str]) -> None:
    summary = summarize(rounds)
    r, per_round = median_ratios(rounds)
    many = " (median of per-round ratios, disturbed runs left out)" if len(rounds) > 1 else ""
    print(f"\n== ratios{many}")
    for key, value in r.items():
        spread = f"   rounds: {per_round[key]}" if len(per_round[key]) > 1 else ""
        print(f"  {key:42s} {'-' if value is None else value}{spread}")
    mirror = r["proxy_shadow_over_nginx_mirror_rps"]
    added = r["proxy_shadow_added_p99_ms"]
    print(
        f"  targets: proxy_shadow_over_nginx_mirror_rps >= {MIRROR_RATIO_TARGET} "
        f"({verdict(mirror, MIRROR_RATIO_TARGET, at_least=True)}); "
        f"proxy_shadow_added_p99_ms <= {P99_TARGET_MS} "
        f"({verdict(added, P99_TARGET_MS, at_least=False)})"
    )
    env = environment(args.workers, args.upstream_workers)
    table = markdown(summary, r, s, args.workers, len(rounds))
    command = reproduce_command(args)
    print(f"\n== Markdown ({env['cpus']} CPUs, {env['cpu_model']}; {env['nginx']}; {env['wrk']})\n")
    print(table)
    print(f"\nReproduce: {command}")
    if failures:
        print("\nFAILED: " + "; ".join(failures))
    if args.json:
        doc = {
            "environment": env,
            "command": command,
            "settings": asdict(s) | {"workers": args.workers, "rounds": args.rounds},
            "summary": {
                ph: {k: asdict(f) for k, f in kinds.items()} for ph, kinds in summary.items()
            },
            "ratios": r,
            "ratios_per_round": per_round,
            "rounds": [
                {
                    phase: {
                        kind: (
                            asdict(run)
                            | {
                                "upstream_per_request": run.upstream_per_request,
                                "sut_cpu_us_per_request": run.sut_cpu_us_per_request,
                            }
                            if run
                            else None
                        )
                        for kind, run in (("closed", res.closed), ("paced", res.paced))
                    }
                    for phase, res in results.items()
                }
                for results in rounds
            ],
            "failures": failures,
            "markdown": table,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nwrote {args.json}")


def reproduce_command(args: argparse.Namespace) -> str:
    parts = [
        ".venv/bin/python tests/benchmarks/http_proxy.py",
        f"--duration {args.duration:g}",
        f"--connections {args.connections}",
        f"--rate {args.rate:g}",
        f"--workers {args.workers}",
    ]
    if args.rounds != 1:
        parts.append(f"--rounds {args.rounds}")
    if args.upstream_workers != args.workers:
        parts.append(f"--upstream-workers {args.upstream_workers}")
    for flag in ("wrk_cpus", "sut_cpus", "upstream_cpus"):
        if getattr(args, flag):
            parts.append(f"--{flag.replace('_', '-')} {getattr(args, flag)}")
    return " ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    s = Settings(
        duration=args.duration,
        warmup=args.warmup,
        connections=args.connections,
        threads=args.threads,
        rate=args.rate,
        rate_connections=args.rate_connections,
        wrk_cpus=args.wrk_cpus,
        max_background=args.max_background,
        quiet_timeout=args.quiet_timeout,
    )
    tmp = Path(tempfile.mkdtemp(prefix="shadowproxy-bench-"))
    tmp.chmod(0o755)  # nginx workers drop root privileges to `nobody`
    procs = Processes(tmp)
    try:
        with terminate_on_sigterm():
            check_prerequisites(args)
            wait_for_older_benchmarks(args.other_benchmark_timeout)
            try:
                rounds, failures = run_rounds(args, s, tmp, procs)
            finally:
                procs.stop_all()
            report(args, s, rounds, failures)
        return 1 if failures else 0
    except BenchError as e:
        print(f"\nbenchmark failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; all benchmark processes stopped", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if args.keep_tmp:
            print(f"temp dir kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
