"""``shadowproxy replay`` and ``export-corpus`` in HTTP mode, as processes of their own: real
backends recorded through a real proxy, then changed (one fixed, one not, one now failing)
before the replay; unsafe methods held back; a corpus exported and replayed; no planted
sensitive value in clear anywhere; bad inputs refused with exit 2."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import orjson
import pytest
import yaml
from aiohttp import web

from tests.integration.conftest import REDIS_URL
from tests.integration.http.conftest import UpstreamFactory
from tests.support.cli import ROOT, Ran, shadowproxy
from tests.support.servers import RunningProxy, Upstream, start_proxy

pytestmark = pytest.mark.integration

KEY = "replay-test-redaction-key-0123456789"
ENV = {"SHADOWPROXY_REDACTION_KEY": KEY}
SECRETS = (
    "ada.secret@example.com",
    "grace.secret@example.com",
    "grace.other@example.com",
    "linus.secret@example.com",
    "tok-3f9a2c",
)
USERS: dict[str, dict[str, Any]] = {
    "1": {"id": 1, "name": "Ada", "email": SECRETS[0]},
    "2": {"id": 2, "name": "Grace", "email": SECRETS[1]},
    "3": {"id": 3, "name": "Linus", "email": "linus@example.org"},
    "4": {"id": 4, "name": "Edsger", "email": "e@example.org"},
}


class Service:
    """A users service whose answers per user a test changes between record and replay."""

    def __init__(self, users: dict[str, dict[str, Any]]) -> None:
        self.users = {k: dict(v) for k, v in users.items()}
        self.failing: set[str] = set()
        self.delete_status = 204

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        key = request.path.rsplit("/", 1)[-1]
        if request.method == "DELETE":
            return web.Response(status=self.delete_status)
        if key in self.failing:
            return web.json_response({"error": "down"}, status=503)
        if key not in self.users:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response(self.users[key])


def config(tmp: Path, primary: Upstream, shadow: Upstream) -> dict[str, Any]:
    return {
        "backends": {
            "legacy": {"kind": "http", "url": primary.url, "timeout_seconds": 5},
            "candidate": {"kind": "http", "url": shadow.url, "timeout_seconds": 2},
        },
        "routes": [
            {
                "name": "users-get",
                "path": "/users/{id}",
                "methods": ["GET", "HEAD"],
                "primary": "legacy",
                "shadow": "candidate",
            },
            {
                "name": "users-delete",
                "path": "/users/{id}",
                "methods": ["DELETE"],
                "primary": "legacy",
                "shadow": "candidate",
                "shadow_methods": ["DELETE"],
            },
        ],
        "sink": {"kind": "jsonl", "path": str(tmp / "mismatches.jsonl")},
        "flags": {"kind": "memory", "audit_path": str(tmp / "audit.jsonl")},
        "logging": {"access_log": False},
    }


def sink_lines(tmp: Path) -> list[dict[str, Any]]:
    path = tmp / "mismatches.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def verdicts(ran: Ran) -> dict[str, str]:
    """``METHOD path`` -> verdict, from ``--format json``."""
    shown = json.loads(ran.out)
    return {f"{r['method']} {r['path']}": r["verdict"] for r in shown["results"]}


def no_secrets(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"{secret} in clear"


async def record(tmp: Path, proxy: RunningProxy) -> None:
    """Send the requests through the proxy and wait for their five mismatch records."""
    async with aiohttp.ClientSession() as http:
        for path in ("/users/1", "/users/2", "/users/3", f"/users/4?email={SECRETS[3]}&x=1"):
            async with http.get(proxy.url + path, headers={"X-Requester-ID": "web"}) as r:
                assert r.status == 200
        async with http.delete(proxy.url + f"/users/4?token={SECRETS[4]}") as r:
            assert r.status == 204
        async with http.delete(proxy.url + "/users/9") as r:
            assert r.status == 204
    await proxy.wait_for(lambda: len(sink_lines(tmp)) >= 6, timeout=15)


@pytest.fixture
async def recorded(tmp_path: Path, upstream_factory: UpstreamFactory) -> Recorded:
    """Two services that disagree on everything the test sends, the proxy's records of it,
    the config file for the CLI; then the proxy is stopped (replay needs only the config)."""
    legacy = Service(USERS)
    candidate = Service(USERS)
    candidate.users["1"]["name"] = "Ada (stale)"
    candidate.users["2"]["email"] = SECRETS[2]
    candidate.users["3"]["name"] = "Linus (stale)"
    candidate.users["4"]["name"] = "Edsger (stale)"
    candidate.delete_status = 404
    primary = await upstream_factory(legacy)
    shadow = await upstream_factory(candidate)
    raw = config(tmp_path, primary, shadow)
    proxy = await start_proxy(raw, env=ENV)
    try:
        await record(tmp_path, proxy)
    finally:
        await proxy.stop()
    path = tmp_path / "http.yaml"
    path.write_text(yaml.safe_dump(raw))
    return Recorded(path, legacy, candidate, primary, shadow)


@dataclass(frozen=True)
class Recorded:
    config: Path
    legacy: Service
    candidate: Service
    primary: Upstream
    shadow: Upstream


def deletes(upstream: Upstream) -> int:
    return sum(1 for seen in upstream.seen if seen.method == "DELETE")


async def test_replay_says_fixed_still_different_failing_and_holds_back_unsafe(
    recorded: Recorded, tmp_path: Path
) -> None:
    path, candidate = recorded.config, recorded.candidate
    primary, shadow = recorded.primary, recorded.shadow
    no_secrets(json.dumps(sink_lines(tmp_path)))  # the records themselves are redacted
    candidate.users["1"]["name"] = "Ada"  # fixed between record and replay
    candidate.failing.add("3")  # now failing
    deletes_before = deletes(primary) + deletes(shadow)

    ran = await shadowproxy("replay", "-c", str(path), "--format", "json", env=ENV)
    assert ran.code == 3, ran
    got = verdicts(ran)
    assert got["GET /users/1"] == "fixed"
    assert got["GET /users/2"] == "still_different"
    assert got["GET /users/3"] == "failing"
    fourth = next(k for k in got if k.startswith("GET /users/4?"))
    assert got[fourth] == "not_replayable"
    fourth = fourth.split(" ", 1)[1]
    delete_keys = [k for k in got if k.startswith("DELETE")]
    assert len(delete_keys) == 2 and {got[k] for k in delete_keys} == {"not_replayable"}
    assert deletes(primary) + deletes(shadow) == deletes_before  # nothing unsafe was sent

    shown = json.loads(ran.out)
    by_path = {r["path"]: r for r in shown["results"]}
    assert "redacted" in by_path[fourth]["detail"] and "'email'" in by_path[fourth]["detail"]
    assert "--allow-unsafe" in by_path["/users/9"]["detail"]
    assert [d["path"] for d in by_path["/users/2"]["differences"]] == ["body.email"]
    assert by_path["/users/2"]["differences"][0]["primary"].startswith("redacted:")
    assert by_path["/users/3"]["detail"] == "candidate answered 503"
    assert shown["totals"]["requests"] == {
        "fixed": 1, "still_different": 1, "failing": 1, "not_replayable": 3,
    }  # fmt: skip
    no_secrets(ran.out, ran.err)

    text = await shadowproxy("replay", "-c", str(path), env=ENV)
    assert text.code == 3
    assert "FIXED" in text.out and "STILL DIFFERENT" in text.out and "FAILING" in text.out
    assert "not replayable: 3 requests (3 records)" in text.out
    no_secrets(text.out, text.err)


async def test_allow_unsafe_sends_a_delete_but_never_a_redacted_value(recorded: Recorded) -> None:
    path, candidate = recorded.config, recorded.candidate
    primary, shadow = recorded.primary, recorded.shadow
    candidate.delete_status = 204  # the DELETE was fixed too
    ran = await shadowproxy(
        "replay", "-c", str(path), "--route", "users-delete", "--allow-unsafe",
        "--format", "json", env=ENV,
    )  # fmt: skip
    got = verdicts(ran)
    assert got["DELETE /users/9"] == "fixed"
    token = next(k for k in got if "token=" in k)
    assert got[token] == "not_replayable"  # its token is a hash in the record
    sent = [s.path_qs for s in (*primary.seen, *shadow.seen) if s.method == "DELETE"]
    assert sent.count("/users/9") == 4  # recorded once on each side, replayed once on each
    assert not any("redacted" in p for p in sent)
    assert ran.code == 0, ran  # the only replayable request is fixed
    no_secrets(ran.out, ran.err)
    strict = await shadowproxy(
        "replay", "-c", str(path), "--route", "users-delete", "--allow-unsafe", "--strict",
        env=ENV,
    )  # fmt: skip
    assert strict.code == 3


async def test_export_corpus_then_replay_it(recorded: Recorded, tmp_path: Path) -> None:
    path, legacy, candidate = recorded.config, recorded.legacy, recorded.candidate
    corpus = tmp_path / "corpus.jsonl"
    ran = await shadowproxy("export-corpus", "-c", str(path), "-o", str(corpus), env=ENV)
    assert ran.code == 0, ran
    assert "3 not kept" in ran.out  # the redacted query, and both DELETEs
    lines = [orjson.loads(line) for line in corpus.read_bytes().splitlines()]
    header, cases = lines[0], lines[1:]
    assert header["shadowproxy_corpus"] == 1 and header["key_check"].startswith("redacted:")
    assert sorted(c["path"] for c in cases) == ["/users/1", "/users/2", "/users/3"]
    second = next(c for c in cases if c["path"] == "/users/2")
    assert second["answer"]["status"] == 200
    assert second["answer"]["json"]["name"] == "Grace"
    assert second["answer"]["json"]["email"].startswith("redacted:")
    assert second["answer"]["headers"] == [["content-type", "application/json; charset=utf-8"]]
    no_secrets(corpus.read_text(), ran.out, ran.err)

    # Each backend against the recorded primary answer: the candidate still differs on 1-3.
    again = await shadowproxy("replay", "-c", str(path), "--corpus", str(corpus),
                              "--format", "json", env=ENV)  # fmt: skip
    assert again.code == 3
    assert set(verdicts(again).values()) == {"still_different"}
    two = next(r for r in json.loads(again.out)["results"] if r["path"] == "/users/2")
    assert {d["backend"] for d in two["differences"]} == {"candidate"}
    no_secrets(again.out, again.err)

    for key in ("1", "2", "3", "4"):
        candidate.users[key] = dict(legacy.users[key])
    green = await shadowproxy("replay", "-c", str(path), "--corpus", str(corpus), env=ENV)
    assert green.code == 0, green
    assert "fixed: 3 requests" in green.out

    candidate.failing.add("2")
    red = await shadowproxy("replay", "-c", str(path), "--corpus", str(corpus),
                            "--format", "json", env=ENV)  # fmt: skip
    assert red.code == 3 and verdicts(red)["GET /users/2"] == "failing"

    other_key = await shadowproxy(
        "replay", "-c", str(path), "--corpus", str(corpus),
        env={"SHADOWPROXY_REDACTION_KEY": "another-key"},
    )  # fmt: skip
    assert other_key.code == 2 and "another redaction key" in other_key.err


async def test_bad_inputs_are_clear_errors(tmp_path: Path) -> None:
    raw = {
        "backends": {"legacy": {"kind": "http", "url": "http://127.0.0.1:9"},
                     "candidate": {"kind": "http", "url": "http://127.0.0.1:9"}},
        "routes": [{"name": "users-get", "path": "/users/{id}", "primary": "legacy",
                    "shadow": "candidate"}],
        "sink": {"kind": "jsonl", "path": str(tmp_path / "none.jsonl")},
        "flags": {"kind": "memory", "audit_path": str(tmp_path / "audit.jsonl")},
    }  # fmt: skip
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))

    missing = await shadowproxy("replay", "-c", str(path), env=ENV)
    assert missing.code == 2 and "sink.path" in missing.err and "no such file" in missing.err

    unknown = await shadowproxy("replay", "-c", str(path), "--route", "nope", env=ENV)
    assert unknown.code == 2 and "'nope'" in unknown.err and "users-get" in unknown.err

    records = tmp_path / "records.jsonl"
    good = {"route": "users-get", "method": "POST", "path": "/users/1", "request_id": "a"}
    records.write_text(
        json.dumps(good) + "\n{not json\n" + json.dumps({"route": "users-get"}) + "\n"
        + json.dumps({**good, "route": "gone"}) + "\n"
    )  # fmt: skip
    bad = await shadowproxy("replay", "-c", str(path), "--records", str(records),
                            "--format", "json", env=ENV)  # fmt: skip
    assert bad.code == 2, bad
    assert "2 malformed lines skipped" in bad.err
    assert "records.jsonl line 2: not JSON" in bad.err
    assert "line 3: not a mismatch record (no method, path)" in bad.err
    shown = json.loads(bad.out)
    assert shown["totals"]["malformed"] == 2
    reasons = {r["route"]: r["detail"] for r in shown["results"]}
    assert "not idempotent" in reasons["users-get"]
    assert reasons["gone"] == "route 'gone' is not in the config"

    absent = await shadowproxy("replay", "-c", str(path), "--records", str(tmp_path / "x"))
    assert absent.code == 2 and "--records" in absent.err

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"shadowproxy_corpus": 1, "key_check": "x"}) + "\n")
    wrong = await shadowproxy("replay", "-c", str(path), "--corpus", str(corpus), env=ENV)
    assert wrong.code == 2 and "another redaction key" in wrong.err
    no_key = await shadowproxy("export-corpus", "-c", str(path), "-o", str(corpus),
                               env={"SHADOWPROXY_REDACTION_KEY": ""})  # fmt: skip
    assert no_key.code == 2 and "SHADOWPROXY_REDACTION_KEY" in no_key.err


async def test_a_corpus_naming_an_unknown_route_is_refused(
    recorded: Recorded, tmp_path: Path
) -> None:
    path = recorded.config
    corpus = tmp_path / "corpus.jsonl"
    assert (
        await shadowproxy("export-corpus", "-c", str(path), "-o", str(corpus), env=ENV)
    ).code == 0
    text = corpus.read_text().replace('"route":"users-get"', '"route":"renamed"')
    corpus.write_text(text)
    ran = await shadowproxy("replay", "-c", str(path), "--corpus", str(corpus), env=ENV)
    assert ran.code == 2 and "route 'renamed', which is not in the config" in ran.err


EXAMPLE_KEYS = (
    "time", "request_id", "operation", "method", "path", "primary_status", "shadow_status",
    "primary_ms", "shadow_ms", "summarised", "detail",
)  # fmt: skip


def report_of(records: list[dict[str, Any]]) -> dict[str, Any]:
    """A JSON report (as ``shadowproxy report --format json`` writes) whose examples are
    ``records``, checked against the published schema."""
    now = records[-1]["time"]
    source = {"kind": "jsonl", "location": "m.jsonl", "available": True, "error": None, "span": ""}
    targets = []
    for name in dict.fromkeys(r["route"] for r in records):
        examples = [
            {**{k: r[k] for k in EXAMPLE_KEYS}, "primary_store": None, "shadow_store": None,
             "differences": r["differences"]}
            for r in records if r["route"] == name
        ]  # fmt: skip
        targets.append(
            {"name": name, "kind": "route", "comparisons": None, "outcomes": None,
             "operations": {}, "mismatch_rate": None, "records": len(examples), "fields": [],
             "timeline": {"bucket_seconds": 60, "buckets": []}, "latency": [],
             "examples": examples, "readiness": None}
        )  # fmt: skip
    report = {
        "format": "shadowproxy-report", "format_version": 1, "generated_at": now,
        "shadowproxy_version": "test", "config": "http.yaml",
        "window": {"since": "24h", "seconds": 86400, "start": now, "end": now},
        "sources": {"sink": source, "counters": source, "readiness": source},
        "malformed_records": 0, "warnings": [], "targets": targets,
    }  # fmt: skip
    schema = json.loads((ROOT / "docs" / "report.schema.json").read_text())
    jsonschema.validate(report, schema, cls=jsonschema.Draft202012Validator)
    return report


async def test_replay_from_a_json_report(recorded: Recorded, tmp_path: Path) -> None:
    recorded.candidate.users["1"]["name"] = "Ada"
    report = tmp_path / "report.json"
    report.write_text(json.dumps(report_of(sink_lines(tmp_path))))
    ran = await shadowproxy(
        "replay", "-c", str(recorded.config), "--report", str(report), "--route", "users-get",
        "--format", "json", env=ENV,
    )  # fmt: skip
    assert ran.code == 3, ran
    got = verdicts(ran)
    assert (got["GET /users/1"], got["GET /users/2"]) == ("fixed", "still_different")
    assert not any(k.startswith("DELETE") for k in got)
    no_secrets(ran.out, ran.err)
    report.write_text(json.dumps({"format": "something else"}))
    wrong = await shadowproxy("replay", "-c", str(recorded.config), "--report", str(report))
    assert wrong.code == 2 and "not a shadowproxy report" in wrong.err


async def test_replay_reads_a_redis_stream_sink(
    recorded: Recorded, tmp_path: Path, redis: Any, prefix: str
) -> None:
    stream = f"{prefix}:mismatches"
    for line in sink_lines(tmp_path):
        await redis.xadd(stream, {"record": json.dumps(line)})
    await redis.xadd(stream, {"record": "{cut"})
    raw = yaml.safe_load(recorded.config.read_text())
    raw["sink"] = {"kind": "redis", "url": REDIS_URL, "stream": stream}
    config = tmp_path / "redis.yaml"
    config.write_text(yaml.safe_dump(raw))
    recorded.candidate.users["2"] = dict(recorded.legacy.users["2"])
    ran = await shadowproxy(
        "replay", "-c", str(config), "--route", "users-get", "--format", "json", env=ENV
    )
    assert ran.code == 2, ran  # the damaged entry
    assert "1 malformed line skipped in redis stream" in ran.err
    got = verdicts(ran)
    assert (got["GET /users/1"], got["GET /users/2"]) == ("still_different", "fixed")
