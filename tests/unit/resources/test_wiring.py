"""What build_parts compiles from a resource declaration: set fields compared as sets."""

from __future__ import annotations

from typing import Any

from comparators import compare
from proxy.resources.wiring import build_parts
from proxy.settings import settings_from_mapping


def parts(**compare_config: Any) -> Any:
    settings = settings_from_mapping(
        {
            "backends": {"pg": {"kind": "postgres", "dsn": "postgresql://u@127.0.0.1:1/x"}},
            "resources": {
                "users": {
                    "prefix": "/users",
                    "key": "id",
                    "fields": {
                        "id": {"type": "int"},
                        "roles": {"type": "set<string>"},
                        "tags": {"type": "list<string>"},
                    },
                    "stores": {"postgres": {"backend": "pg", "table": "users"}},
                    "flags": {"read_from": "postgres", "write_to": ["postgres"]},
                    "compare": compare_config,
                }
            },
        }
    )
    return build_parts(settings.resources["users"], settings, {})


def kinds(comparison: Any) -> list[tuple[str, str, Any, Any]]:
    return [(d.path, d.kind, d.primary, d.shadow) for d in comparison.differences]


def test_a_set_difference_names_the_element_on_one_side_only() -> None:
    rules = parts().record_rules
    found = compare({"id": 1, "roles": ["admin", "user"]}, {"id": 1, "roles": ["user"]}, rules)
    assert kinds(found) == [("roles[]", "removed", "admin", None)]


def test_sets_in_a_listing_too() -> None:
    rules = parts().list_rules
    a = {"items": [{"id": 1, "roles": ["admin", "user"]}]}
    b = {"items": [{"id": 1, "roles": ["guest", "user"]}]}
    assert [(k, p, s) for _, k, p, s in kinds(compare(a, b, rules))] == [
        ("removed", "admin", None),
        ("added", None, "guest"),
    ]


def test_a_list_field_keeps_its_order_and_a_declared_unordered_is_kept() -> None:
    rules = parts().record_rules
    found = compare({"id": 1, "tags": ["a", "b"]}, {"id": 1, "tags": ["b", "a"]}, rules)
    assert [k for _, k, _, _ in kinds(found)] == ["changed", "changed"]
    rules = parts(unordered=["tags"]).record_rules
    assert kinds(compare({"tags": ["a", "b"]}, {"tags": ["b", "a"]}, rules)) == []
