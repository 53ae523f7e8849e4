from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from proxy.experiment.sinks import BufferedSink, JsonlWriter
from proxy.metrics import Metrics
from proxy.settings import JsonlSink


async def test_jsonl_appends_rotates_and_tails(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    writer = JsonlWriter(JsonlSink(path=str(path), max_bytes=1024, backups=2))
    registry = CollectorRegistry()
    sink = BufferedSink(writer, Metrics.create(registry))
    for i in range(100):
        sink.submit({"i": i, "pad": "x" * 40})
    await sink.flush()
    recent = await sink.recent(3)
    assert [r["i"] for r in recent] == [99, 98, 97]
    assert path.with_name("m.jsonl.1").exists()
    assert path.with_name("m.jsonl.2").exists()
    assert not path.with_name("m.jsonl.3").exists()
    assert path.stat().st_size <= 1024
    written = registry.get_sample_value(
        "shadowproxy_sink_records_total", {"sink": "jsonl", "result": "written"}
    )
    assert written == 100
    await sink.close()


async def test_full_sink_queue_drops_and_counts(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    writer = JsonlWriter(JsonlSink(path=str(tmp_path / "m.jsonl")))
    sink = BufferedSink(writer, Metrics.create(registry), capacity=5)
    for i in range(8):
        sink.submit({"i": i})
    dropped = registry.get_sample_value(
        "shadowproxy_sink_records_total", {"sink": "jsonl", "result": "dropped"}
    )
    assert dropped == 3
    await sink.close()
    assert len(await writer.recent(100)) == 5


async def test_failing_writer_is_counted_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    registry = CollectorRegistry()
    writer = JsonlWriter(JsonlSink(path=str(blocker / "m.jsonl")))  # parent is a file
    sink = BufferedSink(writer, Metrics.create(registry))
    sink.submit({"i": 1})
    await sink.flush()
    errors = registry.get_sample_value(
        "shadowproxy_sink_records_total", {"sink": "jsonl", "result": "error"}
    )
    assert errors == 1


@pytest.mark.integration
async def test_redis_stream_sink_caps_length() -> None:
    import uuid

    from proxy.experiment.sinks import RedisStreamWriter
    from proxy.settings import RedisSink

    stream = f"test:mismatches:{uuid.uuid4().hex}"
    writer = RedisStreamWriter(RedisSink(kind="redis", stream=stream, maxlen=10))
    sink = BufferedSink(writer, Metrics.create(CollectorRegistry()))
    try:
        for i in range(500):
            sink.submit({"i": i})
        await sink.flush()
        recent = await sink.recent(5)
        assert [r["i"] for r in recent] == [499, 498, 497, 496, 495]
        length = await writer._redis.xlen(stream)
        assert length < 500
    finally:
        await writer._redis.delete(stream)
        await sink.close()


async def test_records_arriving_close_together_share_a_batch(tmp_path: Path) -> None:
    class Counting(JsonlWriter):
        batches: list[int] = []

        async def write_batch(self, lines: list[bytes]) -> None:
            self.batches.append(len(lines))
            await super().write_batch(lines)

    writer = Counting(JsonlSink(path=str(tmp_path / "new" / "m.jsonl")))  # folder made on use
    sink = BufferedSink(writer, Metrics.create(CollectorRegistry()), linger=0.2)
    for i in range(20):  # one at a time, the loop running in between
        sink.submit({"i": i})
        await asyncio.sleep(0.001)
    await sink.flush()
    assert writer.batches == [20]
    assert [r["i"] for r in await writer.recent(100)] == list(range(19, -1, -1))
    await sink.close()
