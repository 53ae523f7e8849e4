"""schemathesis against a live proxy (store mode: a real PostgreSQL and the moto DynamoDB
endpoint), for both OpenAPI documents: no 5xx, and every answer's status, content type,
headers and body as the document says.

Bounded and reproducible: schemathesis' deterministic mode (hypothesis derandomized: the
same cases every run, no example database), at most ``MAX_EXAMPLES`` cases per operation, a
deadline on the whole run. A failure prints schemathesis' report, with a
``curl`` line reproducing each failing case.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aiohttp
import pytest

from proxy.control.openapi import admin_document
from proxy.flags.model import RESOURCE_FLAGS
from proxy.resources.openapi import resource_document
from tests.integration.api.conftest import StoreProxyFactory, user
from tests.support.servers import RunningProxy

pytestmark = pytest.mark.integration

TOKEN = "fuzz-token"
MAX_EXAMPLES = 50
KNOWN_RECORDS = 5
DEADLINE_SECONDS = 50.0
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
SCHEMATHESIS = Path(sys.executable).with_name("st")


# schemathesis 4.32's coverage phase crashes inside hypothesis while describing one of its own
# lambdas (an AssertionError from hypothesis.internal.lambda_sources, before any request is
# sent): with CI set (hypothesis's ci profile), and always in a freshly made virtualenv. The
# phase is left out until that is fixed upstream; examples and fuzzing still cover every
# operation. CI is kept out of its environment too.
WITHOUT_CI = {k: v for k, v in os.environ.items() if k != "CI"}


async def schemathesis(url: str, tmp: Path, *extra: str, config: str = "") -> tuple[int, str]:
    config_file = tmp / "schemathesis.toml"
    config_file.write_text(config)
    process = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS), "--config-file", str(config_file), "run", url,
        "--checks", ",".join(CHECKS),
        "--phases", "examples,fuzzing",  # coverage: see WITHOUT_CI
        "--max-examples", str(MAX_EXAMPLES),
        "--generation-deterministic",
        "--suppress-health-check", "all",
        "--request-timeout", "10",
        "--workers", "2",
        "--report-dir", str(tmp),
        "--no-color",
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp,
        env=WITHOUT_CI,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(process.communicate(), DEADLINE_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"schemathesis took over {DEADLINE_SECONDS} s") from None
    return process.returncode or 0, out.decode(errors="replace")


async def served(url: str) -> object:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        return await response.json()


def succeeded(proxy: RunningProxy) -> set[str]:
    """The methods some request answered with a 2xx."""
    return {
        sample.labels["method"]
        for metric in proxy.registry.collect()
        if metric.name == "shadowproxy_requests"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["status"].startswith("2")
    }


async def test_resource_api_conforms_to_its_document(
    store_proxy: StoreProxyFactory, tmp_path: Path
) -> None:
    proxy = await store_proxy()
    apis = proxy.apps.resources.apis
    generated = resource_document((api.schema, api.settings) for api in apis)
    assert await served(f"{proxy.url}/openapi.json") == generated
    # Records that exist, so that a share of the cases reads, updates, replaces, deletes
    # and conflicts with real ones instead of finding nothing.
    keys = [user(i)["id"] for i in range(KNOWN_RECORDS)]
    async with aiohttp.ClientSession() as http:
        items = [user(i) for i in range(KNOWN_RECORDS)]
        async with http.post(f"{proxy.url}/users/batch", json={"items": items}) as response:
            assert response.status == 200
    known = ", ".join(f'"{k}"' for k in keys)
    config = (
        f"[dictionaries.keys]\nvalues = [{known}]\n\n"
        '[parameters]\n"path.id" = { dictionary = "keys", probability = 0.5 }\n'
        '"body.id" = { dictionary = "keys", probability = 0.5 }\n'
    )

    status, report = await schemathesis(f"{proxy.url}/openapi.json", tmp_path, config=config)

    assert status == 0, report[-12000:]
    # The cases reached the stores: every method succeeded on some of them.
    assert succeeded(proxy) == {"GET", "POST", "PUT", "PATCH", "DELETE"}


async def test_admin_api_conforms_to_its_document(
    store_proxy: StoreProxyFactory, tmp_path: Path
) -> None:
    proxy = await store_proxy(env={"SHADOWPROXY_ADMIN_TOKEN": TOKEN})
    assert await served(f"{proxy.admin_url}/openapi.json") == admin_document()

    flags = ", ".join(f'"users.{f}"' for f in RESOURCE_FLAGS)
    config = (
        f"[dictionaries.flags]\nvalues = [{flags}]\n\n"
        '[dictionaries.targets]\nvalues = ["users"]\n\n'
        '[parameters]\n"path.name" = { dictionary = "flags", probability = 0.5 }\n'
        '"query.target" = { dictionary = "targets", probability = 0.5 }\n'
    )

    status, report = await schemathesis(
        f"{proxy.admin_url}/openapi.json",
        tmp_path,
        "--header",
        f"Authorization: Bearer {TOKEN}",
        config=config,
    )

    assert status == 0, report[-12000:]
