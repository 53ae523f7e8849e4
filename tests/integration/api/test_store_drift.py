"""Store mode end to end, records written straight into both stores: type drift is reported
whatever the element order, a set difference names the element, and a record one store lacks
is ``removed`` or ``added`` at ``$``, as the mismatch records and metrics show them."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.integration.api.conftest import StoreProxyFactory, stores, user
from tests.support.servers import RunningProxy

pytestmark = pytest.mark.integration

TOKEN = "drift-t0ken"
ENV = {"SHADOWPROXY_ADMIN_TOKEN": TOKEN, "SHADOWPROXY_REDACTION_KEY": "drift-key"}
BOTH = pytest.mark.parametrize("read_from", ["postgres", "dynamodb"])
ADMIN_USER = ["admin", "user"]


def counted(proxy: RunningProxy, metric_name: str, label: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for metric in proxy.registry.collect():
        if metric.name != metric_name:
            continue
        for s in metric.samples:
            if s.name.endswith("_total") and s.value:
                found[s.labels[label]] = found.get(s.labels[label], 0) + s.value
    return found


async def mismatch_records(
    proxy: RunningProxy, http: aiohttp.ClientSession
) -> dict[str, dict[str, Any]]:
    """The redacted mismatch records, by the key of the record they are about."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with http.get(proxy.admin_url + "/mismatches?limit=100", headers=headers) as r:
        assert r.status == 200
        listing = await r.json()
    return {m["path"].rsplit("/", 1)[-1]: m for m in listing["mismatches"]}


async def set_roles(proxy: RunningProxy, key: str, stored: dict[str, Any]) -> None:
    """Overwrite ``roles`` in DynamoDB with an attribute of any type, as another tool might."""
    ddb: Any = stores(proxy)["dynamodb"]
    await ddb._call(
        "UpdateItem",
        TableName=ddb.table,
        Key={"id": {"S": key}},
        UpdateExpression="SET #r = :v",
        ExpressionAttributeNames={"#r": "roles"},
        ExpressionAttributeValues={":v": stored},
    )


def shown(differences: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(d["path"], d["kind"]) for d in differences]


@BOTH
async def test_drift_set_elements_and_missing_records_as_reported(
    read_from: str, store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    proxy = await store_proxy(read_from, env=ENV)
    schema = proxy.apps.resources.services["users"].schema
    both = stores(proxy)
    other = "dynamodb" if read_from == "postgres" else "postgres"
    cases = {
        "ss": user(0, roles=ADMIN_USER),
        "l_sorted": user(1, roles=ADMIN_USER),
        "l_reversed": user(2, roles=ADMIN_USER),
        "l_one": user(3, roles=["user"]),
        "element": user(4, roles=ADMIN_USER),
        "primary_only": user(5),
        "shadow_only": user(6),
    }
    for name, body in cases.items():
        record = schema.validate(body, partial=False)
        if name != "shadow_only":
            await both[read_from].put(record)
        if name != "primary_only":
            await both[other].put(record)
    key = {name: body["id"] for name, body in cases.items()}
    # DynamoDB's roles: the declared SS in another order, or a list L in either order, or a
    # set with one element fewer (dynamodb is the shadow or, read from, the primary).
    await set_roles(proxy, key["ss"], {"SS": ["user", "admin"]})
    await set_roles(proxy, key["l_sorted"], {"L": [{"S": "admin"}, {"S": "user"}]})
    await set_roles(proxy, key["l_reversed"], {"L": [{"S": "user"}, {"S": "admin"}]})
    await set_roles(proxy, key["l_one"], {"L": [{"S": "user"}]})
    await set_roles(proxy, key["element"], {"SS": ["user"]})

    bodies: dict[str, Any] = {}
    for name, k in key.items():
        async with http.get(f"{proxy.url}/users/{k}") as r:
            assert r.status == (404 if name == "shadow_only" else 200), (name, await r.text())
            bodies[name] = await r.json()
    await proxy.wait_for(
        lambda: sum(counted(proxy, "shadowproxy_comparisons", "outcome").values()) >= 7, timeout=30
    )
    await proxy.wait_for(lambda: proxy.apps.runner.depth == 0)
    assert counted(proxy, "shadowproxy_comparisons", "outcome") == {"match": 1, "mismatch": 6}

    # The client gets a drifted value as stored (raw), as before.
    if read_from == "dynamodb":
        assert bodies["l_reversed"]["roles"] == ["user", "admin"]
        assert bodies["l_one"]["roles"] == ["user"]
    else:
        assert bodies["l_reversed"]["roles"] == ADMIN_USER

    records = await mismatch_records(proxy, http)
    assert set(records) == {k for name, k in key.items() if name != "ss"}
    drift = {
        name: records[key[name]]["differences"] for name in ("l_sorted", "l_reversed", "l_one")
    }
    for name, differences in drift.items():
        assert shown(differences) == [("roles", "type_changed")], name
        (d,) = differences
        declared, stored = (
            (d["shadow"], d["primary"])
            if read_from == "dynamodb"
            else (
                d["primary"],
                d["shadow"],
            )
        )
        assert declared == sorted(cases[name]["roles"])
        assert stored["reason"] == "expected SS"
        assert sorted(stored["malformed"]) == sorted(cases[name]["roles"])

    (element,) = records[key["element"]]["differences"]
    if read_from == "postgres":  # the shadow (DynamoDB) lacks "admin"
        assert (element["path"], element["kind"], element["primary"]) == (
            "roles[]",
            "removed",
            "admin",
        )
    else:  # the primary (DynamoDB) lacks it: only the shadow has it
        assert (element["path"], element["kind"], element["shadow"]) == (
            "roles[]",
            "added",
            "admin",
        )

    (gone,) = records[key["primary_only"]]["differences"]
    assert (gone["path"], gone["kind"], gone["shadow"]) == ("$", "removed", None)
    assert gone["primary"]["id"] == key["primary_only"]
    assert gone["primary"]["email"].startswith("redacted:")  # email is sensitive
    (extra,) = records[key["shadow_only"]]["differences"]
    assert (extra["path"], extra["kind"], extra["primary"]) == ("$", "added", None)
    assert extra["shadow"]["email"].startswith("redacted:")

    # Field labels stay bounded: the field, never an element value or a position.
    labels = counted(proxy, "shadowproxy_mismatch_fields", "field")
    assert labels == {"roles": 3, "roles[]": 1, "$": 2}
