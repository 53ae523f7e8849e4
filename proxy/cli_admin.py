"""The CLI side of the admin API: ``flags show|set|history`` and ``readiness`` talk to a
running instance's admin port (``--admin-url``, default from the config) with the admin token
from the environment, so every change goes through the same validation and audit."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from comparators.errors import ShadowProxyError
from proxy.control.flags_api import ACTOR_HEADER, cli_actor
from proxy.settings import Settings


class AdminError(ShadowProxyError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class AdminClient:
    url: str
    token: str

    @classmethod
    def from_settings(cls, settings: Settings, url: str | None) -> AdminClient:
        host = settings.admin.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        token = os.environ.get(settings.admin.token_env, "")
        if not token:
            raise AdminError(0, f"set {settings.admin.token_env} to the admin token")
        return cls(url or f"http://{host}:{settings.admin.port}", token)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header(ACTOR_HEADER, cli_actor())
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read())["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = str(e)
            raise AdminError(e.code, message) from e
        except OSError as e:
            raise AdminError(0, f"cannot reach the admin API at {self.url}: {e}") from e


def flags_show(client: AdminClient) -> str:
    data = client.call("GET", "/flags")
    width = max((len(k) for k in data["flags"]), default=10)
    lines = [f"{name:<{width}}  {_value(v)}" for name, v in sorted(data["flags"].items())]
    store = data["store"]
    health = "healthy" if store["healthy"] else f"UNHEALTHY: {store['last_error']}"
    lines.append(f"(version {data['version']}; flag store {health})")
    return "\n".join(lines)


def flags_set(client: AdminClient, target: str, assignment: str, reason: str, force: bool) -> str:
    flag, sep, value = assignment.partition("=")
    if not sep or not flag:
        raise AdminError(0, f"expected FLAG=VALUE, got {assignment!r}")
    body = {"value": value, "reason": reason, "force": force}
    changed = client.call("PUT", f"/flags/{target}.{flag}", body)["changed"]
    return f"{target}.{flag}: {_value(changed['old'])} -> {_value(changed['new'])}"


def flags_history(client: AdminClient, target: str | None, limit: int) -> str:
    query = f"?limit={limit}" + (f"&target={target}" if target else "")
    entries = client.call("GET", "/flags/history" + query)["history"]
    return (
        "\n".join(
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(e['time']))}Z  {e['actor']:<16} "
            f"{e['target']}.{e['flag']}: {_value(e['old'])} -> {_value(e['new'])}"
            f"{'  (forced)' if e['forced'] else ''}  reason: {e['reason']}"
            for e in entries
        )
        or "(no changes recorded)"
    )


def readiness(client: AdminClient, target: str | None, as_json: bool) -> tuple[bool, str]:
    """The exit status follows the flip-reads verdicts; each resource's stop-old-writes
    verdict is printed after its flip-reads verdict."""
    data = client.call("GET", "/readiness" + (f"?target={target}" if target else ""))
    if as_json:
        return data["ready"], json.dumps(data, indent=2)
    writes = {w["target"]: w["text"] for w in data.get("stop_old_writes", [])}
    texts = []
    for v in data["verdicts"]:
        texts.append(v["text"])
        if v["target"] in writes:
            texts.append(writes[v["target"]])
    return data["ready"], "\n".join(texts)


def _value(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)
