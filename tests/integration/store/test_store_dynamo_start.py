"""Where a DynamoDB backend connects is decided when the CLI starts: ``serve``,
``init-stores`` and ``check-config`` with no region anywhere exit 2 with a config error
naming every way to set one, before anything listens or connects; with one from the
environment they go on."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp_path: Path, endpoint_url: str, **backend: Any) -> Path:
    config = {
        "listen": {"port": free_port()},
        "admin": {"port": free_port()},
        "backends": {"dynamo": {"kind": "dynamodb", "endpoint_url": endpoint_url, **backend}},
        "resources": {
            "users": {
                "prefix": "/users",
                "key": "id",
                "fields": {"id": {"type": "uuid"}, "email": {"type": "string"}},
                "stores": {
                    "dynamodb": {"backend": "dynamo", "table": f"start_{uuid.uuid4().hex[:12]}"}
                },
                "flags": {"read_from": "dynamodb", "write_to": ["dynamodb"]},
            }
        },
        "sink": {"kind": "jsonl", "path": str(tmp_path / "m.jsonl")},
        "flags": {"kind": "memory", "audit_path": str(tmp_path / "audit.jsonl")},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any AWS_* variable, with empty shared files."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    (tmp_path / "aws-config").write_text("")
    env.update(
        AWS_CONFIG_FILE=str(tmp_path / "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        **extra,
    )
    return env


async def run(env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, stderr.decode()


@pytest.mark.parametrize("command", ["serve", "init-stores", "check-config"])
async def test_no_region_anywhere_stops_the_start_with_a_config_error(
    tmp_path: Path, command: str
) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:1")
    code, stderr = await run(environment(tmp_path), command, "-c", str(config))
    assert code == 2, stderr
    assert "shadowproxy: config error: DynamoDB backend 'dynamo' has no region" in stderr
    for way in ("backends.dynamo.region", "AWS_REGION", "AWS_DEFAULT_REGION", "profile"):
        assert way in stderr
    assert "Traceback" not in stderr


async def test_a_region_from_the_environment_is_enough(tmp_path: Path, moto_endpoint: str) -> None:
    config = write_config(tmp_path, moto_endpoint)
    env = environment(tmp_path, AWS_DEFAULT_REGION="eu-west-1")
    code, stderr = await run(env, "init-stores", "-c", str(config))
    assert code == 0, stderr


async def test_a_bad_region_in_the_environment_names_the_variable(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:1")
    env = environment(tmp_path, AWS_REGION="eu_west_1!")
    code, stderr = await run(env, "init-stores", "-c", str(config))
    assert code == 2, stderr
    assert "config error: AWS_REGION = 'eu_west_1!': not a region name" in stderr
