"""Configuration: YAML file + ``SHADOWPROXY__`` environment overrides, validated once.

Override scheme: ``SHADOWPROXY__<KEY>__<KEY>...=<YAML value>``; keys are matched
case-insensitively, list items by index. Examples::

    SHADOWPROXY__LISTEN__PORT=8081
    SHADOWPROXY__BACKENDS__LEGACY__URL=http://10.0.0.5:8000
    SHADOWPROXY__ROUTES__0__SAMPLE=0.25

Secrets never live in the file: the admin token and the redaction key are read from the
environment variables the config names (``SHADOWPROXY_ADMIN_TOKEN`` and
``SHADOWPROXY_REDACTION_KEY`` by default).

Over 400 lines on purpose: the loader and the top-level model with the sections that belong
to no feature package (ports, backends, routes and their comparison rules, limits, logging).
Feature sections sit below it in their packages' ``config`` modules; every key is in
docs/configuration.md, checked by a test.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from proxy.errors import ConfigError
from proxy.flags.config import FlagStoreConfig
from proxy.ratelimit.config import RateLimitConfig
from proxy.readiness.config import ReadinessConfig
from proxy.repair.config import RepairConfig
from proxy.resources.cache_config import CacheConfig
from proxy.store.schema import MAX_ITEM_BYTES, ResourceConfig

ENV_PREFIX = "SHADOWPROXY__"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
SAFE_METHODS = frozenset({"GET", "HEAD"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Port(_Model):
    """A listening port and how long its clients may take (``proxy.client_timeouts``)."""

    host: str = "127.0.0.1"
    header_timeout_seconds: float = Field(10.0, gt=0, le=3600)
    body_timeout_seconds: float = Field(60.0, gt=0, le=3600)
    idle_timeout_seconds: float = Field(75.0, gt=0, le=3600)


class Listen(_Port):
    port: int = Field(8080, ge=0, le=65535)
    # HTTP routes: dot segments in a request path are refused (400) or removed; encoded
    # slashes and control characters are refused either way (proxy.http.target).
    path_policy: Literal["reject", "normalize"] = "reject"


class Admin(_Port):
    port: int = Field(9090, ge=0, le=65535)
    token_env: str = "SHADOWPROXY_ADMIN_TOKEN"


class Logging(_Model):
    format: Literal["auto", "json", "text"] = "auto"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    access_log: bool = True


class Requesters(_Model):
    header: str = "X-Requester-ID"
    known: tuple[str, ...] = ()


class HttpBackend(_Model):
    kind: Literal["http"]
    url: str
    timeout_seconds: float = Field(10.0, gt=0)
    connect_timeout_seconds: float = Field(2.0, gt=0)
    max_connections: int = Field(256, ge=1)
    # Requests waiting for a connection when all max_connections are busy; one more is
    # refused at once (503 for the primary, shadow_error for a shadow), so a slow backend
    # cannot pile up requests and their bodies.
    max_waiting: int = Field(1024, ge=0)
    retries: int = Field(0, ge=0, le=10)
    retry_backoff_seconds: float = Field(0.05, ge=0)
    # https:// only: the CA bundle to verify the backend's certificate with (default: the
    # system's), the name for SNI and the certificate check (default: the URL's host), and
    # whether to verify at all (never turn it off outside a test).
    tls_ca_file: str | None = None
    tls_server_name: str | None = None
    tls_verify: bool = True

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", v):
            raise ValueError("must be an absolute http:// or https:// URL without query")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _tls_for_https(self) -> HttpBackend:
        if self.url.startswith("http://"):
            for key in ("tls_ca_file", "tls_server_name"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key} applies to https:// backends only ({self.url})")
        return self


class PostgresBackend(_Model):
    kind: Literal["postgres"]
    dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    pool_min: int = Field(1, ge=0)
    pool_max: int = Field(10, ge=1)
    # Calls waiting for a connection when all pool_max are busy; one more is refused at once
    # (503 with Retry-After) instead of queueing behind a slow database.
    max_waiting: int = Field(256, ge=0)
    timeout_seconds: float = Field(5.0, gt=0)
    connect_timeout_seconds: float = Field(5.0, gt=0)
    scan_page: int = Field(1000, ge=1, le=10_000)  # rows per page of a backfill or verify


class DynamoDBBackend(_Model):
    kind: Literal["dynamodb"]
    # Where requests go, resolved once at start as botocore resolves it (proxy.store.aws,
    # docs/dynamodb.md): a key left unset falls back to the AWS_* environment variables,
    # then to the AWS profile. No region anywhere is a config error, not us-east-1.
    endpoint_url: str | None = None  # an emulator, a VPC endpoint; None: the region's own
    region: str | None = None
    profile: str | None = None  # of ~/.aws/config; also where credentials come from
    use_fips: bool | None = None
    ca_bundle: str | None = None  # PEM file the https endpoint is verified with
    timeout_seconds: float = Field(5.0, gt=0)  # one attempt, waiting for a connection included
    connect_timeout_seconds: float = Field(2.0, gt=0)
    # One call as a whole, every retry and backoff included: a throttled or failed attempt is
    # tried again only while the next can start before it; then 503 (throttled) or 504.
    # None: twice timeout_seconds.
    deadline_seconds: float | None = Field(None, gt=0)
    max_connections: int = Field(64, ge=1)  # calls in flight at once, per process
    max_waiting: int = Field(1024, ge=0)  # calls waiting for one of them; more: 503 at once
    max_attempts: int = Field(8, ge=1, le=20)
    sdk_max_attempts: int = Field(3, ge=1, le=10)
    scan_page: int | None = Field(None, ge=1, le=10_000)  # items per Scan page; None: 1 MB
    # Reads by key that start in the same loop turn go out as one BatchGetItem (at most 100
    # keys); false: one GetItem each (proxy.store.dynamo_coalesce).
    coalesce_reads: bool = True
    access_key_id_env: str = "AWS_ACCESS_KEY_ID"
    secret_access_key_env: str = "AWS_SECRET_ACCESS_KEY"
    session_token_env: str = "AWS_SESSION_TOKEN"  # temporary keys (STS) come with one

    @field_validator("region")
    @classmethod
    def _region(cls, v: str | None) -> str | None:
        from proxy.store.aws import REGION_NAME

        if v is not None and not REGION_NAME.match(v):
            raise ValueError("not a region name (like eu-west-1)")
        return v

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_url(cls, v: str | None) -> str | None:
        from proxy.store.aws import Endpoint

        if v is not None:
            Endpoint.parse(v, "")  # ValueError: says what is wrong with it
        return v

    @field_validator("profile", "ca_bundle")
    @classmethod
    def _not_empty(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be empty (leave the key out instead)")
        return v


Backend = Annotated[HttpBackend | PostgresBackend | DynamoDBBackend, Field(discriminator="kind")]


class CompareConfig(_Model):
    status: bool = True
    headers: tuple[str, ...] = ("content-type",)
    # false: a 5xx answer is an error outcome (primary_error / shadow_error), not compared
    server_errors: bool = False
    ignore: tuple[str, ...] = ()
    numeric_tolerance: float = Field(0.0, ge=0)
    numeric_tolerances: dict[str, float] = {}
    timestamp_tolerance_seconds: float = Field(0.0, ge=0)
    timestamp_tolerances: dict[str, float] = {}
    unordered: tuple[str, ...] = ()
    keyed: dict[str, str] = {}
    max_diff_bytes: int = Field(256 * 1024, ge=0)


class NoiseConfig(_Model):
    """A second instance of the primary whose differences from the primary are learned as
    noise per field (``proxy.experiment.noise``, docs/noise.md)."""

    backend: str
    sample: float = Field(0.1, gt=0, le=1)  # share of shadowed requests also sent to it
    min_samples: int = Field(20, ge=1)  # noise comparisons before any field can be noisy
    threshold: float = Field(0.5, gt=0, le=1)  # noisy: noise rate >= threshold * shadow rate
    max_fields: int = Field(200, ge=1, le=10_000)  # fields tracked per route


class Route(_Model):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    path: str
    methods: tuple[str, ...] = ("GET", "HEAD")
    primary: str
    shadow: str | None = None
    sample: float = Field(1.0, ge=0, le=1)
    sample_key: str | None = None
    shadow_methods: tuple[str, ...] = ("GET", "HEAD")
    compare: CompareConfig = CompareConfig()
    noise: NoiseConfig | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must start with '/'")
        return v

    @field_validator("methods", "shadow_methods")
    @classmethod
    def _methods(cls, v: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        upper = tuple(m.upper() for m in v)
        bad = [m for m in upper if m not in _METHODS and m != "*"]
        if bad:
            raise ValueError(f"unknown HTTP method {bad[0]!r}")
        if info.field_name == "shadow_methods" and "*" in upper:
            # Spelled out once here, so routing and readiness see only real methods.
            return tuple(sorted(_METHODS))
        return upper

    @field_validator("sample_key")
    @classmethod
    def _sample_key(cls, v: str | None) -> str | None:
        if v is None or v == "path" or re.fullmatch(r"(header|query):[A-Za-z0-9_-]+", v):
            return v
        raise ValueError("must be 'path', 'header:<name>' or 'query:<name>'")


class ShadowConfig(_Model):
    queue_size: int = Field(1024, ge=1)
    concurrency: int = Field(64, ge=1)
    timeout_seconds: float = Field(5.0, gt=0)
    body_max_bytes: int = Field(1024 * 1024, ge=0)
    drain_seconds: float = Field(5.0, ge=0)
    diff_per_second: float = Field(200.0, ge=0)
    diff_burst: int = Field(50, ge=1)
    # Mismatch records (sink, /mismatches, the log line) per second and at once, per process:
    # every mismatch is counted in the metrics; past this its record is skipped (counted as
    # shadowproxy_sink_records_total{result="skipped"}), so a candidate that mismatches on
    # every request costs the primary little and cannot flood the sink.
    records_per_second: float = Field(100.0, ge=0)
    records_burst: int = Field(200, ge=0)
    # Comparison CPU per process: the share of one core that comparisons whose bytes differ
    # may take (parsing, canonical bytes, diff or summary; an equal-bytes match is free), and
    # how many seconds of it may be spent at once. Past it a comparison is not judged and is
    # counted as skipped (shadowproxy_compare_skipped_total{reason="cpu_budget"}): a candidate
    # that differs on every request costs the primary at most this, and readiness estimates
    # its mismatch rate from the judged sample. None: no bound.
    compare_cpu_share: float | None = Field(0.05, ge=0, le=1)
    compare_cpu_burst_seconds: float = Field(0.1, ge=0, le=60)
    # Store reads' shadow jobs are held this long and then started together, so reads by key
    # arriving a few milliseconds apart share one BatchGetItem (proxy.experiment.shadow).
    # 0: each starts at once. HTTP shadows are never held. 20 ms, not 5: at a 10% shadow
    # of ~3,000 reads/s a batch then holds ~6 reads, not ~1.5 (docs/benchmarks.md).
    gather_seconds: float = Field(0.02, ge=0, le=1)


class ResourceFlags(_Model):
    """Which store serves reads, which stores receive writes, what share of reads is shadowed,
    and what share of reads (sticky per key) the new store already serves. Initial values:
    at run time the flag store holds them (``shadowproxy flags``)."""

    read_from: str
    write_to: tuple[str, ...]
    shadow_reads: float = Field(1.0, ge=0, le=1)
    new_store_read_fraction: float = Field(0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _safe(self) -> ResourceFlags:
        if not self.write_to:
            raise ValueError("write_to must name at least one store")
        if self.read_from not in self.write_to:
            raise ValueError(
                f"read_from = {self.read_from!r} must be in write_to: reading from a store "
                "that no longer receives writes serves stale data"
            )
        return self


class GuardrailSettings(_Model):
    """While the new store serves reads (reads flipped to it, or a ``new_store_read_fraction``
    canary): undo that by itself when, within ``watch_seconds`` and over at least
    ``min_comparisons``, the new store's error rate or the mismatch rate (measured against the
    old store as shadow) crosses its threshold (``proxy.control.guardrail``)."""

    enabled: bool = True
    watch_seconds: float = Field(600.0, gt=0)
    min_comparisons: int = Field(50, ge=1)
    max_mismatch_rate: float = Field(0.01, ge=0, le=1)
    max_primary_error_rate: float = Field(0.05, ge=0, le=1)


class ResourceSettings(ResourceConfig):
    """A resource as declared in config: the schema contract plus how it is served."""

    flags: ResourceFlags
    new_store: str | None = None
    guardrail: GuardrailSettings | None = None
    compare: CompareConfig = CompareConfig(headers=())
    recheck_delay_seconds: float = Field(0.2, ge=0, le=30)
    recheck_attempts: int = Field(3, ge=0, le=10)
    breaker_threshold: int = Field(5, ge=1)
    breaker_cooldown_seconds: float = Field(2.0, gt=0)
    secondary_write_timeout_seconds: float = Field(5.0, gt=0)
    # How long a client write waits for the other stores after the primary answered; past
    # it the client gets the primary's result and the write finishes (or is repaired) later.
    secondary_write_budget_seconds: float = Field(0.1, ge=0, le=60)
    # Secondary writes still running after their client was answered, per process; past it
    # a write's keys go straight to the repair log (memory stays bounded when a store hangs).
    max_pending_secondary_writes: int = Field(1000, ge=1)
    # The share of dual writes read back from both stores off the client path and compared
    # (operation "write_verify"), so a divergence shows even for keys nobody reads.
    write_verify: float = Field(0.01, ge=0, le=1)
    max_batch_items: int = Field(1000, ge=1, le=10_000)
    max_list_limit: int = Field(1000, ge=1)
    # The largest record, measured as DynamoDB measures an item; a write of a larger one is
    # refused (413) before any store is written. At most DynamoDB's 400 KB (409600 bytes)
    # while a DynamoDB store holds the resource (checked in Settings).
    max_record_bytes: int = Field(MAX_ITEM_BYTES, ge=1)
    cache_ttl_seconds: float = Field(0, ge=0)
    # Which reads a shadow_reads share below 1 picks: "random" (each read drawn anew), or
    # "key": sticky per key (a get's key, a lookup's value), so one key is always compared
    # or never; lists and batch gets, which have no one key, stay random.
    shadow_sample: Literal["random", "key"] = "random"

    @model_validator(mode="after")
    def _flag_stores(self) -> ResourceSettings:
        for name in (self.flags.read_from, *self.flags.write_to, self.new_store or ""):
            if not name:
                continue
            if name not in self.stores:
                raise ValueError(
                    f"flags name store {name!r}, which is not under stores "
                    f"(declared: {', '.join(sorted(self.stores)) or 'none'})"
                )
        return self


class Redaction(_Model):
    fields: tuple[str, ...] = ("email", "phone", "password", "ssn", "token")
    key_env: str = "SHADOWPROXY_REDACTION_KEY"


class JsonlSink(_Model):
    kind: Literal["jsonl"] = "jsonl"
    path: str = "shadowproxy-mismatches.jsonl"
    max_bytes: int = Field(50 * 1024 * 1024, ge=1024)
    backups: int = Field(3, ge=0)


class RedisSink(_Model):
    kind: Literal["redis"]
    url: str = "redis://127.0.0.1:6379/0"
    stream: str = "shadowproxy:mismatches"
    maxlen: int = Field(10_000, ge=1)


class Limits(_Model):
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=0)


Sink = Annotated[JsonlSink | RedisSink, Field(discriminator="kind")]


class Settings(_Model):
    listen: Listen = Listen()
    admin: Admin = Admin()
    workers: int = Field(1, ge=1, le=64)
    logging: Logging = Logging()
    requesters: Requesters = Requesters()
    backends: dict[str, Backend] = {}
    routes: tuple[Route, ...] = ()
    resources: dict[str, ResourceSettings] = {}
    cache: CacheConfig | None = None
    repair: RepairConfig | None = None
    flags: FlagStoreConfig = FlagStoreConfig()
    readiness: ReadinessConfig = ReadinessConfig()
    shadow: ShadowConfig = ShadowConfig()
    redaction: Redaction = Redaction()
    sink: Sink = JsonlSink()
    limits: Limits = Limits()
    rate_limits: RateLimitConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _resource_names(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("resources"), dict):
            data = dict(data)
            data["resources"] = {
                name: {"name": name, **spec} if isinstance(spec, dict) else spec
                for name, spec in data["resources"].items()
            }
        return data

    @model_validator(mode="after")
    def _references(self) -> Settings:
        for name, resource in self.resources.items():
            for store, table in resource.stores.items():
                backend = self.backends.get(table.backend)
                if backend is None:
                    raise ValueError(
                        f"resources.{name}.stores.{store}.backend = {table.backend!r}: "
                        f"no such backend (known: {', '.join(sorted(self.backends)) or 'none'})"
                    )
                if backend.kind == "http":
                    raise ValueError(
                        f"resources.{name}.stores.{store}.backend = {table.backend!r}: "
                        "a store backend must be of kind postgres or dynamodb"
                    )
                if backend.kind == "dynamodb" and resource.max_record_bytes > MAX_ITEM_BYTES:
                    raise ValueError(
                        f"resources.{name}.max_record_bytes = {resource.max_record_bytes}: "
                        f"more than DynamoDB's item limit of {MAX_ITEM_BYTES} bytes, and store "
                        f"{store!r} is DynamoDB (a larger record could never be written there)"
                    )
        names: set[str] = set()
        for i, route in enumerate(self.routes):
            if route.name in names:
                raise ValueError(f"routes[{i}].name = {route.name!r}: duplicate route name")
            names.add(route.name)
            for role in ("primary", "shadow"):
                ref = getattr(route, role)
                if ref is not None and ref not in self.backends:
                    raise ValueError(
                        f"routes[{i}].{role} = {ref!r}: no such backend "
                        f"(known: {', '.join(sorted(self.backends)) or 'none'})"
                    )
                if ref is not None and self.backends[ref].kind != "http":
                    raise ValueError(f"routes[{i}].{role} = {ref!r}: routes need an http backend")
            if route.shadow is not None and route.shadow == route.primary:
                raise ValueError(f"routes[{i}].shadow = {route.shadow!r}: same as primary")
            if route.noise is not None:
                self._noise_backend(i, route, route.noise.backend)
        self._rate_limit_targets(names)
        return self

    def _noise_backend(self, i: int, route: Route, name: str) -> None:
        where = f"routes[{i}].noise.backend = {name!r}"
        backend = self.backends.get(name)
        if backend is None:
            known = ", ".join(sorted(self.backends)) or "none"
            raise ValueError(f"{where}: no such backend (known: {known})")
        if backend.kind != "http":
            raise ValueError(f"{where}: the noise backend must be of kind http")
        if name in (route.primary, route.shadow):
            raise ValueError(
                f"{where}: must be a second instance of the primary, not the "
                "primary or the shadow itself"
            )
        if route.shadow is None:
            raise ValueError(
                f"{where}: the route has no shadow, so there is nothing to tell noise from"
            )

    def _rate_limit_targets(self, routes: set[str]) -> None:
        if self.rate_limits is None:
            return
        known = routes | set(self.resources)
        for target in self.rate_limits.targets:
            if target not in known:
                raise ValueError(
                    f"rate_limits.targets.{target}: no route or resource of that name "
                    f"(known: {', '.join(sorted(known)) or 'none'})"
                )


def load_settings(path: str | Path | None, env: Mapping[str, str] | None = None) -> Settings:
    """Read, override from the environment and validate; raise ConfigError on any fault."""
    raw: Any = {}
    source = str(path) if path is not None else "<defaults>"
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as e:
            raise ConfigError(f"cannot read config file {source}: {e.strerror}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {source} is not valid YAML: {e}") from e
    return settings_from_mapping(raw, source=source, env=os.environ if env is None else env)


def settings_from_mapping(
    raw: Any, *, source: str = "<config>", env: Mapping[str, str] | None = None
) -> Settings:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(raw).__name__}")
    data = apply_env_overrides(raw, env or {})
    try:
        return Settings.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{source}: {format_validation_error(e)}") from e


def format_validation_error(e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        key = _key_path(err["loc"])
        value = err.get("input")
        if err["type"] == "missing":
            lines.append(f"{key}: required key is missing")
        elif err["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key")
        elif key:
            lines.append(f"{key} = {value!r}: {_message(err['msg'])}")
        else:
            lines.append(_message(err["msg"]))
    return "; ".join(lines)


def _message(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("http", "postgres", "dynamodb", "jsonl", "redis") and out:
            continue  # pydantic's discriminator tag, not a key the user wrote
        else:
            out += f".{part}" if out else str(part)
    return out


def apply_env_overrides(raw: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = _deep_copy(raw)
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        try:
            value = yaml.safe_load(env[name])
        except yaml.YAMLError as e:
            raise ConfigError(f"environment {name} = {env[name]!r}: not a YAML value") from e
        _set_path(data, parts, value, name)
    return data


def _set_path(data: Any, parts: list[str], value: Any, env_name: str) -> None:
    node = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"environment {env_name}: no list item {part!r}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"environment {env_name}: cannot descend into {part!r}")
        key = next((k for k in node if str(k).lower() == part), part)
        if last:
            node[key] = value
        else:
            node = node.setdefault(key, {})


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
