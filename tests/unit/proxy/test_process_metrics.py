"""Process metrics of ``serve --workers N`` over its workers, from a made-up /proc."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from proxy.process_metrics import WorkerProcessCollector

TICKS_PER_SECOND = 100  # os.sysconf("SC_CLK_TCK") on Linux
PAGE = 4096


def fake_process(proc: Path, pid: int, parent: int, *, ticks: int, pages: int, fds: int) -> None:
    """``/proc/<pid>`` with what ProcessCollector reads: stat, limits, fd/."""
    root = proc / str(pid)
    (root / "fd").mkdir(parents=True)
    for fd in range(fds):
        (root / "fd" / str(fd)).touch()
    # comm with a space and a parenthesis, as a process may name itself
    fields = ["S", str(parent)] + ["0"] * 9 + [str(ticks), str(ticks)] + ["0"] * 6
    fields += [str(1000 + pid), "1048576", str(pages)]
    (root / "stat").write_text(f"{pid} (python) x) {' '.join(fields)}\n")
    (root / "limits").write_text(
        "Limit                     Soft Limit           Hard Limit           Units\n"
        f"Max open files            {1024 * pid}                 4096                 files\n"
    )


def test_workers_are_summed_and_strangers_ignored(tmp_path: Path) -> None:
    proc, metrics_dir = tmp_path / "proc", tmp_path / "metrics"
    proc.mkdir()
    metrics_dir.mkdir()
    (proc / "stat").write_text("cpu 1 2 3\nbtime 1700000000\n")
    fake_process(proc, 11, 10, ticks=100, pages=10, fds=3)
    fake_process(proc, 12, 10, ticks=300, pages=30, fds=5)
    fake_process(proc, 13, 99, ticks=900, pages=90, fds=7)  # a reused pid: another parent
    for name in ("counter_11.db", "gauge_livesum_11.db", "histogram_12.db", "counter_13.db",
                 "counter_14.db", "notes.txt"):  # fmt: skip
        (metrics_dir / name).touch()  # 14: a worker gone, its file left behind
    registry = CollectorRegistry()
    collector = WorkerProcessCollector(
        str(metrics_dir), proc=str(proc), parent=10, registry=registry
    )
    assert collector.workers() == [11, 12]

    def value(name: str) -> float | None:
        return registry.get_sample_value(name)

    assert value("process_cpu_seconds_total") == (200 + 600) / TICKS_PER_SECOND
    assert value("process_resident_memory_bytes") == 40 * PAGE
    assert value("process_virtual_memory_bytes") == 2 * 1048576
    assert value("process_open_fds") == 8
    assert value("process_max_fds") == 1024 * 11  # the tightest limit
    assert value("process_start_time_seconds") == 1700000000 + (1000 + 11) / TICKS_PER_SECOND


def test_nothing_when_the_directory_is_gone(tmp_path: Path) -> None:
    collector = WorkerProcessCollector(str(tmp_path / "nope"), parent=1)
    assert collector.workers() == []
    assert list(collector.collect()) == []
