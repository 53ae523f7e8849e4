"""Building stores from backend config: credentials half set are a config error."""

from __future__ import annotations

import pytest

from proxy.errors import ConfigError
from proxy.resources.stores import build_store
from proxy.settings import DynamoDBBackend
from proxy.store.schema import ResourceConfig, Schema

SCHEMA = Schema(
    ResourceConfig.model_validate(
        {"name": "users", "prefix": "/users", "key": "id", "fields": {"id": {"type": "uuid"}}}
    )
)
BACKEND = DynamoDBBackend(kind="dynamodb", endpoint_url="http://127.0.0.1:8000", region="us-east-1")


@pytest.mark.parametrize(
    ("env", "given", "missing"),
    [
        ({"AWS_ACCESS_KEY_ID": "AKID"}, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
        ({"AWS_SECRET_ACCESS_KEY": "s3cret"}, "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"),
    ],
)
def test_one_credential_without_the_other_names_both_variables(
    env: dict[str, str], given: str, missing: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        build_store(BACKEND, "users", SCHEMA, env)
    message = str(caught.value)
    assert f"{given} is set but {missing} is not" in message
    assert "s3cret" not in message and "AKID" not in message  # names, never values


@pytest.mark.parametrize("env", [{}, {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}])
def test_both_or_neither_build_a_store(env: dict[str, str]) -> None:
    store = build_store(BACKEND, "users", SCHEMA, env)
    assert store.kind == "dynamodb"
