"""In multiprocess mode the metric values name their process by a pid kept in memory
(``proxy.metrics._pid_kept_in_memory``), not by ``os.getpid()`` on every write, and still
behave as prometheus-client's own: a forked child writes files of its own, and the values
of every process sum up at scrape. Each case runs in a fresh interpreter, since the swap
happens when ``proxy.metrics`` is first imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

FORKED = """
import json, os
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.multiprocess import MultiProcessCollector
import proxy.metrics

counter = Counter("jobs", "jobs done", registry=None)
real_getpid = os.getpid
def no_system_call():
    raise AssertionError("os.getpid() called on a value write")
os.getpid = no_system_call
counter.inc(1)
os.getpid = real_getpid
child = os.fork()
if child == 0:
    counter.inc(10)
    os._exit(0)
os.waitpid(child, 0)
counter.inc(100)
registry = CollectorRegistry()
MultiProcessCollector(registry, path=os.environ["PROMETHEUS_MULTIPROC_DIR"])
print(json.dumps({
    "kept": proxy.metrics.PID_KEPT_IN_MEMORY,
    "total": registry.get_sample_value("jobs_total"),
    "files": sorted(os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"])),
    "pids": [os.getpid(), child],
}))
"""

WRITTEN_BEFORE = """
import json
from prometheus_client import Counter
Counter("early", "written before proxy.metrics is imported", registry=None).inc()
import proxy.metrics
print(json.dumps({"kept": proxy.metrics.PID_KEPT_IN_MEMORY}))
"""


def run(script: str, directory: Path) -> dict[str, object]:
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_writes_name_the_process_without_a_system_call_and_a_fork_still_sums(
    tmp_path: Path,
) -> None:
    got = run(FORKED, tmp_path)
    assert got["kept"] is True
    assert got["total"] == 111.0  # 1 + 100 in the parent, 10 in its forked child
    parent, child = got["pids"]  # type: ignore[misc]
    assert got["files"] == sorted([f"counter_{parent}.db", f"counter_{child}.db"])


def test_a_process_that_wrote_a_value_first_keeps_the_librarys_own(tmp_path: Path) -> None:
    assert run(WRITTEN_BEFORE, tmp_path) == {"kept": False}
