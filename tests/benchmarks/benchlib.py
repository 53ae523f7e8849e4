"""What the benchmark scripts share: child processes that are always stopped (also on
Ctrl-C and SIGTERM), free loopback ports, a tiny HTTP GET, waiting until a server answers.
Imported by the scripts in this folder as ``benchlib`` (they run with this folder on
``sys.path``); not a test module."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent


class BenchError(Exception):
    """A prerequisite is missing or a process under test misbehaved."""


class Processes:
    """Starts child processes in their own sessions and always stops them, newest first.

    Each child leads a new process group, so stopping it also reaches whatever it started
    (shadowproxy and baseline workers) without touching anything this script did not start.
    """

    def __init__(self, logdir: Path) -> None:
        self._logdir = logdir
        self._procs: list[tuple[str, subprocess.Popen[bytes], int]] = []

    def start(
        self,
        name: str,
        cmd: Sequence[str],
        *,
        stop_signal: int = signal.SIGTERM,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        log = (self._logdir / f"{name}.log").open("ab")
        try:
            proc = subprocess.Popen(
                list(cmd),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                cwd=REPO,
            )
        finally:
            log.close()
        self._procs.append((name, proc, stop_signal))
        return proc

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self._logdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
        for entry in list(self._procs):
            if entry[1] is proc:
                self._procs.remove(entry)
                _stop(proc, entry[2], timeout)

    def running(self) -> dict[str, int]:
        """Name -> process group id of every child still running."""
        return {name: proc.pid for name, proc, _ in self._procs if proc.poll() is None}

    def stop_all(self, keep: Sequence[str] = ()) -> None:
        """Stop every child (newest first) except those named in `keep`; a second Ctrl-C
        does not abandon the cleanup half-way."""
        with signals_ignored():
            for entry in reversed(list(self._procs)):
                name, proc, sig = entry
                if name not in keep:
                    self._procs.remove(entry)
                    _stop(proc, sig, 20.0)


def _stop(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    pgid = proc.pid  # start_new_session: the child leads its own group
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"  ! pid {proc.pid} ignored signal {sig} for {timeout:.0f}s; killing its group")
    # Whatever is left in the group (the leader if it hung, or orphaned workers).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into SystemExit so `finally` blocks stop the children."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        print(f"\nsignal {signum}: stopping all benchmark processes", file=sys.stderr)
        raise SystemExit(128 + signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def guarded(procs: Processes) -> Iterator[None]:
    """One benchmark run: SIGTERM ends it like Ctrl-C, a BenchError or Ctrl-C becomes a said
    exit (status 1 or 130), and every child is stopped whatever happens."""
    try:
        with terminate_on_sigterm():
            yield
    except BenchError as e:
        print(f"\nbenchmark failed: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("\ninterrupted; all benchmark processes stopped", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        procs.stop_all()


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """A second Ctrl-C (or SIGTERM) must not abandon the cleanup half-way."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now, below the kernel's ephemeral range when possible (a
    listening port from the ephemeral range can be taken by the local end of one of the many
    connections a run opens before the server binds it)."""
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    candidates = list(range(20000, low)) if low > 21000 else []
    random.shuffle(candidates)
    ports: list[int] = []
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    while len(ports) < count:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in ports:
            ports.append(port)
    return ports


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_ready(
    url: str,
    proc: subprocess.Popen[bytes],
    timeout: float,
    what: str,
    procs: Processes,
    logname: str,
    ok: tuple[int, ...] = (200,),
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(
                f"{what} exited with {proc.returncode} before it was ready:\n"
                f"{procs.log_tail(logname)}"
            )
        with contextlib.suppress(OSError):
            if http_get(url, timeout=1.0)[0] in ok:
                return
        time.sleep(0.1)
    raise BenchError(f"{what} not ready at {url} after {timeout:.0f}s:\n{procs.log_tail(logname)}")


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo``, "?" where there is none."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its children (worker processes) so far."""
    total = 0
    for p in [pid, *_children(pid)]:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(c) for c in text.split()]
    return []


def shadowproxy_command() -> list[str]:
    script = Path(sys.executable).parent / "shadowproxy"
    return [str(script)] if script.exists() else [sys.executable, "-m", "proxy"]


def wrk_report(
    procs: Processes,
    cmd: Sequence[str],
    *,
    log: Path,
    duration: float,
    env: dict[str, str],
) -> dict[str, Any]:
    """Run wrk (``cmd``, its Lua script printing ``BENCH_RESULT {json}``) through ``procs``
    and return that JSON report; a wrk that hangs, fails or prints none is a ``BenchError``.
    ``log`` is where ``procs`` writes wrk's output (``<logdir>/<name>.log``): only what this
    run appended is read."""
    start = log.stat().st_size if log.exists() else 0
    proc = procs.start(log.stem, cmd, stop_signal=signal.SIGINT, env=env)
    try:
        proc.wait(duration + 30)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish within {duration + 30:.0f}s") from None
    finally:
        procs.stop(proc)
    with log.open("rb") as f:
        f.seek(start)
        out = f.read().decode(errors="replace")
    match = re.search(r"^BENCH_RESULT (\{.*\})$", out, re.MULTILINE)
    if proc.returncode != 0 or not match:
        raise BenchError(f"wrk failed (exit {proc.returncode}):\n{out[-2000:]}")
    report: dict[str, Any] = json.loads(match.group(1))
    return report
