from __future__ import annotations

import copy
from typing import Any

import pytest

from proxy.store.schema import ResourceConfig, Schema

RESOURCE: dict[str, Any] = {
    "name": "users",
    "prefix": "/users",
    "key": "id",
    "fields": {
        "id": {"type": "uuid"},
        "email": {"type": "string", "sensitive": True, "nullable": False, "required": True},
        "first_name": {"type": "string"},
        "is_active": {"type": "bool", "nullable": False},
        "created_at": {"type": "datetime", "nullable": False},
        "birthday": {"type": "date"},
        "preferences": {"type": "json"},
        "roles": {"type": "set<string>"},
        "tags": {"type": "list<string>"},
        "lucky": {"type": "set<int>"},
        "balance": {"type": "decimal"},
        "login_count": {"type": "int"},
        "score": {"type": "float"},
    },
    "indexes": {"email": {"field": "email", "dynamodb_index": "email-index"}},
    "stores": {"postgres": {"backend": "pg", "table": "users"}},
}

ID = "2f1b7e1c-7a4e-4c1e-9a43-0d3c1f9b6a10"
VALID = {"id": ID, "email": "a@example.com", "is_active": True, "created_at": "2024-01-01T00:00Z"}


@pytest.fixture
def resource() -> dict[str, Any]:
    return copy.deepcopy(RESOURCE)


@pytest.fixture(scope="session")
def schema() -> Schema:
    return Schema(ResourceConfig.model_validate(RESOURCE))


@pytest.fixture
def valid() -> dict[str, Any]:
    """A minimal valid JSON body."""
    return dict(VALID)
