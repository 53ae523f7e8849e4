"""Where a DynamoDB backend's requests go — region, endpoint URL, CA bundle — decided once, at
start, the way botocore decides them, so that a config that works with the AWS CLI or boto3
works here and one that cannot work fails before the first request, not on it.

    target = resolve(backend, os.environ, name="dynamo")   # raises ConfigError
    target.region, target.url, target.ca_bundle

Each setting is the backend's own key when set, else the environment, else the AWS profile
(the shared config file ``AWS_CONFIG_FILE``, default ``~/.aws/config``, with the profiles of
the credentials file ``AWS_SHARED_CREDENTIALS_FILE`` merged in, as botocore does):

* profile: ``profile``, ``AWS_DEFAULT_PROFILE``, ``AWS_PROFILE`` (botocore reads them in that
  order), else ``default``; a profile chosen by name must exist.
* region: ``region``, ``AWS_REGION``, ``AWS_DEFAULT_REGION``, the profile's ``region``; none
  is a ConfigError (botocore would raise NoRegionError at the first call).
* endpoint: ``endpoint_url``, ``AWS_ENDPOINT_URL_DYNAMODB``, ``AWS_ENDPOINT_URL``, the
  profile's ``services`` section, the profile's ``endpoint_url`` (all but the first ignored
  under ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS``), else derived from the region's partition
  as DynamoDB's endpoint rules derive it (``PARTITIONS`` is botocore's partitions.json).
* FIPS: ``use_fips``, ``AWS_USE_FIPS_ENDPOINT``, the profile's ``use_fips_endpoint``; it only
  changes a derived endpoint (GovCloud's regular endpoints are FIPS already).
* CA bundle: ``ca_bundle``, ``AWS_CA_BUNDLE``, the profile's ``ca_bundle``; https only.

Deliberately not: dual-stack and account-id endpoints, instance-metadata region lookup.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from proxy.errors import ConfigError

SERVICE_ENV = "DYNAMODB"  # botocore's AWS_ENDPOINT_URL_<service id> for DynamoDB
LOCAL_REGION = "local"  # DynamoDB's endpoint rules: DynamoDB Local on this machine
LOCAL_ENDPOINT = "http://localhost:8000"
LOCAL_SIGNING_REGION = "us-east-1"
# botocore's validate_region_name: a host label.
REGION_NAME = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9\-]{0,61}[a-zA-Z0-9])?$")


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    pattern: re.Pattern[str]
    dns_suffix: str

    @property
    def global_region(self) -> str:  # listed by name in partitions.json, not by the pattern
        return f"{self.name}-global"


# botocore/data/partitions.json, in its order (the first is the fallback).
PARTITIONS = tuple(
    Partition(name, re.compile(pattern), dns_suffix)
    for name, pattern, dns_suffix in (
        ("aws", r"^(us|eu|ap|sa|ca|me|af|il|mx)\-\w+\-\d+$", "amazonaws.com"),
        ("aws-cn", r"^cn\-\w+\-\d+$", "amazonaws.com.cn"),
        ("aws-eusc", r"^eusc\-(de)\-\w+\-\d+$", "amazonaws.eu"),
        ("aws-iso", r"^us\-iso\-\w+\-\d+$", "c2s.ic.gov"),
        ("aws-iso-b", r"^us\-isob\-\w+\-\d+$", "sc2s.sgov.gov"),
        ("aws-iso-e", r"^eu\-isoe\-\w+\-\d+$", "cloud.adc-e.uk"),
        ("aws-iso-f", r"^us\-isof\-\w+\-\d+$", "csp.hci.ic.gov"),
        ("aws-us-gov", r"^us\-gov\-\w+\-\d+$", "amazonaws.com"),
    )
)


def partition(region: str) -> Partition:
    """The partition of a region: listed by name, else matching a pattern, else ``aws``."""
    for candidate in PARTITIONS:
        if region == candidate.global_region:
            return candidate
    for candidate in PARTITIONS:
        if candidate.pattern.match(region):
            return candidate
    return PARTITIONS[0]


def derive_endpoint(region: str, use_fips: bool = False) -> str:
    """DynamoDB's endpoint for a region, as its endpoint rules give it (ValueError: none)."""
    if region == LOCAL_REGION:
        if use_fips:
            raise ValueError("FIPS and the local endpoint (region 'local') are not supported")
        return LOCAL_ENDPOINT
    part = partition(region)
    host = "dynamodb-fips" if use_fips and part.name != "aws-us-gov" else "dynamodb"
    return f"https://{host}.{region}.{part.dns_suffix}"


def signing_region(region: str) -> str:
    """The region in the SigV4 scope: the region itself, but ``us-east-1`` for ``local``."""
    return LOCAL_SIGNING_REGION if region == LOCAL_REGION else region


@dataclass(frozen=True, slots=True)
class Endpoint:
    scheme: str
    host: str
    port: int
    host_header: str  # with the port only when it is not the scheme's default

    @classmethod
    def parse(cls, endpoint_url: str | None, region: str, use_fips: bool = False) -> Endpoint:
        """An endpoint URL (``None``: the region's own) split for the connection pool."""
        url = endpoint_url or derive_endpoint(region, use_fips)
        split = urlsplit(url)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise ValueError(f"DynamoDB endpoint {url!r}: expected http(s)://host[:port]")
        if split.path not in ("", "/") or split.query or split.fragment:
            raise ValueError(f"DynamoDB endpoint {url!r}: a path or query is not supported")
        default = 443 if split.scheme == "https" else 80
        try:
            port = split.port or default
        except ValueError as e:
            raise ValueError(f"DynamoDB endpoint {url!r}: {e}") from e
        host = split.hostname
        shown = f"[{host}]" if ":" in host else host
        header = shown if port == default else f"{shown}:{port}"
        return cls(split.scheme, host, port, header)


def tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """The TLS context of an https endpoint: the system's CAs, or only the bundle's."""
    return ssl.create_default_context(cafile=ca_bundle)


class AwsBackend(Protocol):
    """What resolution reads of a backend's config (``proxy.settings.DynamoDBBackend``)."""

    @property
    def region(self) -> str | None: ...
    @property
    def profile(self) -> str | None: ...
    @property
    def endpoint_url(self) -> str | None: ...
    @property
    def use_fips(self) -> bool | None: ...
    @property
    def ca_bundle(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class AwsTarget:
    """One backend's resolved destination."""

    region: str
    url: str  # where requests go: the configured endpoint, else the derived one
    endpoint_url: str | None  # the configured endpoint; None when derived from the region
    use_fips: bool  # whether a derived endpoint is the FIPS one
    ca_bundle: str | None  # verify the endpoint against this bundle only (https only)
    profile: str | None  # the profile chosen by name, for credentials; None: botocore's own
    region_source: str  # where the region came from, for messages


@dataclass(frozen=True, slots=True)
class _Profiles:
    path: str
    profiles: dict[str, dict[str, str]]
    services: dict[str, dict[str, dict[str, str]]]


def resolve(backend: AwsBackend, env: Mapping[str, str], *, name: str = "dynamodb") -> AwsTarget:
    """Resolve a backend's region, endpoint and CA bundle; ConfigError when it cannot work."""
    key = f"backends.{name}"
    shared = _load_profiles(env)
    profile_name, profile_source = _first(
        (backend.profile, f"{key}.profile"),
        (env.get("AWS_DEFAULT_PROFILE"), "AWS_DEFAULT_PROFILE"),
        (env.get("AWS_PROFILE"), "AWS_PROFILE"),
    )
    if profile_name is not None and profile_name not in shared.profiles:
        raise ConfigError(
            f"{profile_source} = {profile_name!r}: no such AWS profile in {shared.path} "
            "(sections [default] and [profile NAME]) or the credentials file"
        )
    chosen = profile_name or "default"
    profile = shared.profiles.get(chosen, {})
    in_profile = f"profile {chosen!r} of {shared.path}"

    region, region_source = _first(
        (backend.region, f"{key}.region"),
        (env.get("AWS_REGION"), "AWS_REGION"),
        (env.get("AWS_DEFAULT_REGION"), "AWS_DEFAULT_REGION"),
        (profile.get("region"), f"region of {in_profile}"),
    )
    if region is None:
        raise ConfigError(
            f"DynamoDB backend {name!r} has no region: set {key}.region, or AWS_REGION "
            f"(or AWS_DEFAULT_REGION), or a region in the AWS profile {chosen!r} "
            f"({shared.path})"
        )
    if not REGION_NAME.match(region):
        raise ConfigError(f"{region_source} = {region!r}: not a region name (like eu-west-1)")

    ignore = _boolean(
        _first(
            (env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"), ""),
            (profile.get("ignore_configured_endpoint_urls"), ""),
        )[0]
    )
    endpoint_env = env.get(f"AWS_ENDPOINT_URL_{SERVICE_ENV}") or env.get("AWS_ENDPOINT_URL")
    looks_further = not (ignore or backend.endpoint_url or endpoint_env)
    services = _services(shared, profile, in_profile) if looks_further else {}
    endpoint_url, endpoint_source = _first(
        (backend.endpoint_url, f"{key}.endpoint_url"),
        *(
            ()
            if ignore
            else (
                (env.get(f"AWS_ENDPOINT_URL_{SERVICE_ENV}"), f"AWS_ENDPOINT_URL_{SERVICE_ENV}"),
                (env.get("AWS_ENDPOINT_URL"), "AWS_ENDPOINT_URL"),
                (
                    services.get("endpoint_url"),
                    f"dynamodb endpoint_url of the services of {in_profile}",
                ),
                (profile.get("endpoint_url"), f"endpoint_url of {in_profile}"),
            )
        ),
    )
    fips_value, fips_source = _first(
        (None if backend.use_fips is None else str(backend.use_fips), f"{key}.use_fips"),
        (env.get("AWS_USE_FIPS_ENDPOINT"), "AWS_USE_FIPS_ENDPOINT"),
        (profile.get("use_fips_endpoint"), f"use_fips_endpoint of {in_profile}"),
    )
    use_fips = _boolean(fips_value) and endpoint_url is None  # a configured endpoint wins
    try:
        url = endpoint_url or derive_endpoint(region, use_fips)
        Endpoint.parse(url, region)
    except ValueError as e:
        source = (
            endpoint_source if endpoint_url is not None else f"{fips_source} with {region_source}"
        )
        raise ConfigError(f"{source}: {e}") from e

    ca_bundle, ca_source = _first(
        (backend.ca_bundle, f"{key}.ca_bundle"),
        (env.get("AWS_CA_BUNDLE"), "AWS_CA_BUNDLE"),
        (profile.get("ca_bundle"), f"ca_bundle of {in_profile}"),
    )
    if not url.startswith("https://"):
        ca_bundle = None  # nothing to verify over plain http
    elif ca_bundle is not None and not os.path.isfile(ca_bundle):
        raise ConfigError(f"{ca_source} = {ca_bundle!r}: no such file (a PEM CA bundle)")
    return AwsTarget(
        region=region,
        url=url,
        endpoint_url=endpoint_url,
        use_fips=use_fips,
        ca_bundle=ca_bundle,
        profile=profile_name,
        region_source=region_source,
    )


def _first(*candidates: tuple[str | None, str]) -> tuple[str | None, str]:
    """The first set (non-empty) value and its source; ``(None, "")`` when none is."""
    for value, source in candidates:
        if value:
            return value, source
    return None, ""


def _boolean(value: str | None) -> bool:
    """botocore's ensure_boolean for text: only ``true`` (any case) is true."""
    return value is not None and value.strip().lower() == "true"


def _services(shared: _Profiles, profile: Mapping[str, str], where: str) -> dict[str, str]:
    section = profile.get("services")
    if not section:
        return {}
    if section not in shared.services:
        raise ConfigError(
            f"services of {where} = {section!r}: no [services {section}] section in {shared.path}"
        )
    return shared.services[section].get("dynamodb", {})


def _load_profiles(env: Mapping[str, str]) -> _Profiles:
    """The profiles of the shared config file, with the credentials file's merged in."""
    config_path = env.get("AWS_CONFIG_FILE") or "~/.aws/config"
    credentials_path = env.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials"
    profiles: dict[str, dict[str, str]] = {}
    services: dict[str, dict[str, dict[str, str]]] = {}
    for section, values in _read_ini(config_path).items():
        if section == "default":
            profiles["default"] = {k: v for k, v in values.items() if isinstance(v, str)}
            continue
        kind, _, rest = section.partition(" ")
        try:
            parts = shlex.split(section)
        except ValueError:
            continue
        if len(parts) != 2 or not rest:
            continue
        if kind == "profile":
            profiles[parts[1]] = {k: v for k, v in values.items() if isinstance(v, str)}
        elif kind == "services":
            services[parts[1]] = {k: v for k, v in values.items() if isinstance(v, dict)}
    for section, values in _read_ini(credentials_path).items():
        flat = {k: v for k, v in values.items() if isinstance(v, str)}
        profiles.setdefault(section, {}).update(flat)
    return _Profiles(_expand(config_path), profiles, services)


def _expand(path: str) -> str:
    return os.path.expanduser(os.path.expandvars(path))


def _read_ini(path: str) -> dict[str, dict[str, str | dict[str, str]]]:
    """An INI file's sections (missing: none); an indented block is a nested section."""
    full = _expand(path)
    if not os.path.isfile(full):
        return {}
    parser = configparser.RawConfigParser()
    try:
        parser.read(full, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as e:
        raise ConfigError(f"AWS config file {full}: cannot be parsed: {e}") from e
    sections: dict[str, dict[str, str | dict[str, str]]] = {}
    for section in parser.sections():
        values: dict[str, str | dict[str, str]] = {}
        for option in parser.options(section):
            value = parser.get(section, option)
            if value.startswith("\n"):
                nested = {}
                for line in value.splitlines():
                    name, sep, inner = line.strip().partition("=")
                    if sep:
                        nested[name.strip()] = inner.strip()
                values[option] = nested
            else:
                values[option] = value.strip()
        sections[section] = values
    return sections
