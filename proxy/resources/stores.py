"""Build store objects from backend config. asyncpg (and the DynamoDB client) stay behind these
imports."""

from __future__ import annotations

import os
from collections.abc import Mapping

from proxy.errors import ConfigError
from proxy.settings import Backend, DynamoDBBackend, PostgresBackend, ResourceSettings
from proxy.store.base import ManagedStore
from proxy.store.retry import RetryPolicy
from proxy.store.schema import Schema


def build_store(
    backend: Backend,
    table: str,
    schema: Schema,
    env: Mapping[str, str] | None = None,
    *,
    name: str | None = None,
) -> ManagedStore:
    """``name``: the backend's key under ``backends``, for config error messages."""
    env = os.environ if env is None else env
    if isinstance(backend, PostgresBackend):
        from proxy.store.postgres import PostgresStore

        return PostgresStore(
            backend.dsn,
            table,
            schema,
            min_size=backend.pool_min,
            max_size=backend.pool_max,
            max_waiting=backend.max_waiting,
            command_timeout=backend.timeout_seconds,
            connect_timeout=backend.connect_timeout_seconds,
            scan_page=backend.scan_page,
        )
    if isinstance(backend, DynamoDBBackend):
        from proxy.store.aws import resolve
        from proxy.store.dynamodb import DynamoDBStore

        # Region, endpoint and CA bundle: once, here, at start (ConfigError if none works).
        target = resolve(backend, env, name=name or "dynamodb")
        key_id = env.get(backend.access_key_id_env) or None
        secret = env.get(backend.secret_access_key_env) or None
        if (key_id is None) != (secret is None):
            given, missing = (
                (backend.access_key_id_env, backend.secret_access_key_env)
                if key_id
                else (backend.secret_access_key_env, backend.access_key_id_env)
            )
            raise ConfigError(
                f"DynamoDB credentials: {given} is set but {missing} is not; set both, or "
                "neither to use the default credential chain"
            )
        return DynamoDBStore(
            target.endpoint_url,
            target.region,
            table,
            schema,
            retry=RetryPolicy(max_attempts=backend.max_attempts),
            # Keys in the configured env vars win; without them the client asks botocore's
            # default chain (profiles, roles), and an emulator endpoint falls back to dummies.
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            aws_session_token=env.get(backend.session_token_env) or None,
            connect_timeout=backend.connect_timeout_seconds,
            read_timeout=backend.timeout_seconds,
            sdk_max_attempts=backend.sdk_max_attempts,
            deadline=backend.deadline_seconds or 2 * backend.timeout_seconds,
            max_connections=backend.max_connections,
            max_waiting=backend.max_waiting,
            use_fips=target.use_fips,
            ca_bundle=target.ca_bundle,
            profile=target.profile,
            scan_page=backend.scan_page,
            coalesce_reads=backend.coalesce_reads,
        )
    raise ConfigError(f"backend kind {backend.kind!r} cannot hold a resource")


def build_stores(
    resource: ResourceSettings,
    backends: Mapping[str, Backend],
    schema: Schema,
    env: Mapping[str, str] | None = None,
) -> dict[str, ManagedStore]:
    return {
        name: build_store(backends[table.backend], table.table, schema, env, name=table.backend)
        for name, table in resource.stores.items()
    }
