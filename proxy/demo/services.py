"""Two small users APIs for the HTTP demo: a "legacy" one and a "candidate" one whose data
differs in a few deliberate records (and in harmless noise the comparison rules ignore)."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

Users = dict[int, dict[str, Any]]

# What the candidate gets wrong, on purpose: every one must show up in the summary.
DIVERGENCES = {
    7: "email changed",
    13: "missing in the candidate",
    21: "age stored as a string",
    42: "created_at off by one hour",
}


LAST_NAMES = ("Lovelace", "Hopper", "Torvalds", "Thompson", "Liskov", "Dijkstra", "Allen")


def make_users(count: int = 200, seed: int = 7) -> Users:
    rng = random.Random(seed)
    first = ["Ada", "Grace", "Linus", "Ken", "Barbara", "Edsger", "Frances", "Dennis"]
    last = list(LAST_NAMES)
    base = datetime(2024, 1, 1, tzinfo=UTC)
    users: Users = {}
    for i in range(1, count + 1):
        users[i] = {
            "id": i,
            "email": f"user{i}@example.com",
            "first_name": rng.choice(first),
            "last_name": rng.choice(last),
            "age": rng.randint(18, 90),
            "is_active": rng.random() > 0.1,
            "created_at": (base + timedelta(minutes=37 * i)).isoformat(),
            "roles": rng.sample(["admin", "editor", "viewer", "billing"], k=rng.randint(1, 3)),
        }
    return users


def candidate_users(legacy: Users) -> Users:
    users = {k: dict(v, roles=list(reversed(v["roles"]))) for k, v in legacy.items()}
    users[7]["email"] = "user7@example.org"
    del users[13]
    users[21]["age"] = str(users[21]["age"])
    created = datetime.fromisoformat(users[42]["created_at"])
    users[42]["created_at"] = (created + timedelta(hours=1)).isoformat()
    return users


def users_app(users: Users, *, shuffle_lists: bool = False) -> web.Application:
    """The users API both sides implement: get, list, create."""
    noise: Callable[[], dict[str, str]] = lambda: {  # noqa: E731
        "served_at": datetime.now(UTC).isoformat(),
        "trace_id": os.urandom(4).hex(),
    }

    async def get_user(request: web.Request) -> web.Response:
        try:
            user = users[int(request.match_info["id"])]
        except (KeyError, ValueError):
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response({**user, **noise()})

    async def list_users(request: web.Request) -> web.Response:
        last_name = request.query.get("last_name")
        limit = int(request.query.get("limit", "100"))
        items = [u for _, u in sorted(users.items()) if u["last_name"] == last_name][:limit]
        if shuffle_lists:
            items = list(reversed(items))
        return web.json_response({"items": items, "count": len(items), **noise()})

    async def create_user(request: web.Request) -> web.Response:
        body = await request.json()
        new_id = max(users, default=0) + 1
        users[new_id] = {**body, "id": new_id}
        return web.json_response(users[new_id], status=201)

    app = web.Application()
    app.router.add_get("/users/{id}", get_user)
    app.router.add_get("/users", list_users)
    app.router.add_post("/users", create_user)
    return app


def legacy_and_candidate(count: int = 200) -> tuple[web.Application, web.Application]:
    legacy = make_users(count)
    return users_app(legacy), users_app(candidate_users(legacy), shuffle_lists=True)
