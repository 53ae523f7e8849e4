"""``shadowproxy replay`` and ``export-corpus`` in store mode, as processes of their own: reads
recorded as mismatches by a real proxy over PostgreSQL and DynamoDB (moto's server), one key
made equal meanwhile and one not; the corpus replayed against both stores; no planted
sensitive value in clear in the outputs or the corpus."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml

from tests.integration.api.conftest import StoreProxyFactory, mirrored, stores, user
from tests.support.cli import Ran, shadowproxy
from tests.support.servers import RunningProxy

pytestmark = pytest.mark.integration

KEY = "replay-store-test-redaction-key-42"
ENV = {"SHADOWPROXY_REDACTION_KEY": KEY}
SECRETS = ("ada.secret@example.com", "grace.secret@example.com", "grace.moved@example.com")


def sink_lines(proxy: RunningProxy) -> list[dict[str, Any]]:
    path = Path(proxy.settings.sink.path)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def config_file(proxy: RunningProxy, tmp: Path) -> Path:
    """The running proxy's settings as a config file for the CLI."""
    path = tmp / "users.yaml"
    path.write_text(yaml.safe_dump(proxy.settings.model_dump(mode="json")))
    return path


def verdicts(ran: Ran) -> dict[str, str]:
    return {r["path"]: r["verdict"] for r in json.loads(ran.out)["results"]}


def no_secrets(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"{secret} in clear"


async def test_store_replay_fixed_still_different_and_the_corpus(
    store_proxy: StoreProxyFactory, tmp_path: Path
) -> None:
    proxy = await store_proxy(env=ENV)
    schema = proxy.apps.resources.services["users"].schema
    ada, grace = user(0, email=SECRETS[0]), user(1, email=SECRETS[1])
    async with aiohttp.ClientSession() as http:
        for body in (ada, grace):
            async with http.post(proxy.url + "/users", json=body) as r:
                assert r.status == 201, await r.text()
        await mirrored(proxy)
        ddb = stores(proxy)["dynamodb"]
        await ddb.put(schema.validate({**ada, "first_name": "Ada (stale)"}, partial=False))
        await ddb.put(schema.validate({**grace, "email": SECRETS[2]}, partial=False))
        for path in (f"/users/{ada['id']}", f"/users/{grace['id']}", "/users?first_name=Grace"):
            async with http.get(proxy.url + path) as r:
                assert r.status == 200
        async with http.get(proxy.url + "/users", params={"email": SECRETS[1]}) as r:
            assert r.status == 200
    await proxy.wait_for(lambda: len(sink_lines(proxy)) >= 4, timeout=20)
    no_secrets(json.dumps(sink_lines(proxy)))
    config = config_file(proxy, tmp_path)

    await ddb.put(schema.validate(ada, partial=False))  # made equal between record and replay
    ran = await shadowproxy("replay", "-c", str(config), "--format", "json", env=ENV)
    assert ran.code == 3, ran
    got = verdicts(ran)
    assert got[f"/users/{ada['id']}"] == "fixed"
    assert got[f"/users/{grace['id']}"] == "still_different"
    assert got["/users?first_name=Grace"] == "still_different"
    lookup = next(p for p in got if p.startswith("/users?email="))
    assert got[lookup] == "not_replayable"
    shown = {r["path"]: r for r in json.loads(ran.out)["results"]}
    assert "'email' is redacted" in shown[lookup]["detail"]
    differences = shown[f"/users/{grace['id']}"]["differences"]
    assert [d["path"] for d in differences] == ["email"]
    assert differences[0]["postgres"].startswith("redacted:")
    assert differences[0]["dynamodb"].startswith("redacted:")
    assert shown[f"/users/{grace['id']}"]["sides"] == {"postgres": "found", "dynamodb": "found"}
    no_secrets(ran.out, ran.err)

    corpus = tmp_path / "corpus.jsonl"
    exported = await shadowproxy(
        "export-corpus", "-c", str(config), "--resource", "users", "-o", str(corpus), env=ENV
    )
    assert exported.code == 0, exported
    cases = [orjson.loads(line) for line in corpus.read_bytes().splitlines()[1:]]
    assert sorted(c["path"] for c in cases) == sorted(
        [f"/users/{ada['id']}", f"/users/{grace['id']}", "/users?first_name=Grace"]
    )
    kept = next(c for c in cases if c["path"] == f"/users/{grace['id']}")
    assert kept["kind"] == "store" and kept["answer"]["store"] == "postgres"
    assert kept["answer"]["value"]["email"].startswith("redacted:")
    assert kept["answer"]["value"]["first_name"] == "Grace"
    no_secrets(corpus.read_text(), exported.out, exported.err)

    again = await shadowproxy(
        "replay", "-c", str(config), "--corpus", str(corpus), "--format", "json", env=ENV
    )
    assert again.code == 3, again
    got = verdicts(again)
    assert got[f"/users/{ada['id']}"] == "fixed"
    assert got[f"/users/{grace['id']}"] == "still_different"
    second = next(r for r in json.loads(again.out)["results"] if r["path"].endswith(grace["id"]))
    assert {d["store"] for d in second["differences"]} == {"dynamodb"}
    no_secrets(again.out, again.err)

    await ddb.put(schema.validate(grace, partial=False))
    green = await shadowproxy("replay", "-c", str(config), "--corpus", str(corpus), env=ENV)
    assert green.code == 0, green
    records = await shadowproxy("replay", "-c", str(config), env=ENV)
    assert records.code == 0, records  # the lookup is not replayable: reported, not failed
    assert "not replayable: 1 request (1 record)" in records.out
    strict = await shadowproxy("replay", "-c", str(config), "--strict", env=ENV)
    assert strict.code == 3
    no_secrets(green.out, records.out, strict.out, records.err)


async def test_a_store_that_is_down_is_reported_as_failing(
    store_proxy: StoreProxyFactory, tmp_path: Path
) -> None:
    proxy = await store_proxy(env=ENV)
    ada = user(0, email=SECRETS[0])
    records = tmp_path / "records.jsonl"
    record = {
        "route": "users", "resource": "users", "operation": "get", "method": "GET",
        "path": f"/users/{ada['id']}", "request_id": "r1",
        "primary_store": "postgres", "shadow_store": "dynamodb",
    }  # fmt: skip
    records.write_text(json.dumps(record) + "\n")
    raw = proxy.settings.model_dump(mode="json")
    table = raw["resources"]["users"]["stores"]["dynamodb"]["table"]
    raw["resources"]["users"]["stores"]["dynamodb"]["table"] = table + "_missing"
    config = tmp_path / "users.yaml"
    config.write_text(yaml.safe_dump(raw))
    ran = await shadowproxy(
        "replay", "-c", str(config), "--records", str(records), "--format", "json", env=ENV
    )
    assert ran.code == 3, ran
    (result,) = json.loads(ran.out)["results"]
    assert result["verdict"] == "failing"
    assert result["detail"].startswith("dynamodb: ")
