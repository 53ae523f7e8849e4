"""Where a DynamoDB backend connects, held to botocore: the endpoint of each region with and
without FIPS is the one botocore sends its request to, and region, profile, endpoint, FIPS
and CA bundle are looked up in botocore's order (botocore reads ``os.environ``, so each test
sets the real environment and hands the same mapping to ``resolve``)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.config
import botocore.endpoint_provider
import botocore.session
import pytest
from botocore.exceptions import BotoCoreError

from proxy.errors import ConfigError
from proxy.resources.stores import build_store, build_stores
from proxy.settings import DynamoDBBackend, ResourceSettings, settings_from_mapping
from proxy.store.aws import (
    PARTITIONS,
    AwsTarget,
    Endpoint,
    derive_endpoint,
    partition,
    resolve,
    signing_region,
)
from proxy.store.schema import Schema

REGIONS = [
    "us-east-1",
    "eu-west-1",
    "ap-southeast-5",
    "ca-west-1",
    "cn-north-1",
    "cn-northwest-1",
    "us-gov-west-1",
    "us-gov-east-1",
    "us-iso-east-1",
    "us-isob-east-1",
    "eu-isoe-west-1",
    "us-isof-south-1",
    "eusc-de-east-1",
    "aws-cn-global",
    "xx-future-7",  # an unknown region: the aws partition, as in botocore
    "local",
]


class _Sent(Exception):
    pass


def botocore_request(
    region: str | None = None, *, use_fips: bool | None = None, endpoint_url: str | None = None
) -> tuple[str, str]:
    """(URL, signing region) of the request botocore actually sends: its endpoint rules,
    not ``meta.endpoint_url`` (that is the legacy endpoints.json answer, which for GovCloud
    with FIPS names a host the request does not go to)."""
    session = botocore.session.Session()
    client = session.create_client(
        "dynamodb",
        region_name=region,
        endpoint_url=endpoint_url,
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=botocore.config.Config(use_fips_endpoint=use_fips, retries={"max_attempts": 1}),
    )
    seen: dict[str, str] = {}

    def before_send(request: Any, **_: Any) -> None:
        seen["url"] = request.url
        auth = request.headers["Authorization"]
        seen["scope"] = (auth.decode() if isinstance(auth, bytes) else auth).split("/")[2]
        raise _Sent

    client.meta.events.register("before-send", before_send)
    with pytest.raises(_Sent):
        client.describe_table(TableName="t")
    return seen["url"].rstrip("/"), seen["scope"]


def botocore_rules() -> botocore.endpoint_provider.EndpointProvider:
    loader = botocore.session.get_session().get_component("data_loader")
    return botocore.endpoint_provider.EndpointProvider(
        loader.load_service_model("dynamodb", "endpoint-rule-set-1"),
        loader.load_data("partitions"),
    )


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No AWS_* variable set but empty config and credentials files of the test's own;
    yields the config file's path."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    config = tmp_path / "config"
    config.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield config


def backend(**keys: Any) -> DynamoDBBackend:
    return DynamoDBBackend(kind="dynamodb", **keys)


def ours(**keys: Any) -> AwsTarget:
    return resolve(backend(**keys), dict(os.environ), name="ddb")


# derived endpoints -----------------------------------------------------------------------


@pytest.mark.parametrize("use_fips", [False, True], ids=["plain", "fips"])
@pytest.mark.parametrize("region", REGIONS)
def test_derived_endpoints_are_where_botocore_sends(
    aws_env: Path, region: str, use_fips: bool
) -> None:
    if region == "local" and use_fips:
        with pytest.raises(BotoCoreError, match="FIPS and local endpoint"):
            botocore_request(region, use_fips=True)
        with pytest.raises(ValueError, match="FIPS"):
            derive_endpoint(region, use_fips)
        with pytest.raises(
            ConfigError, match=re.escape("backends.ddb.use_fips with backends.ddb.region")
        ):
            ours(region=region, use_fips=True)
        return
    url, scope = botocore_request(region, use_fips=use_fips)
    assert derive_endpoint(region, use_fips) == url
    assert signing_region(region) == scope
    target = ours(region=region, use_fips=use_fips)
    assert (target.url, target.region, target.endpoint_url) == (url, region, None)
    endpoint = Endpoint.parse(None, region, use_fips)
    assert f"{endpoint.scheme}://{endpoint.host_header}" == url


def test_every_listed_region_derives_as_botocores_rules() -> None:
    """Every region of botocore's partitions.json, with and without FIPS, through
    DynamoDB's own endpoint rule set."""
    rules = botocore_rules()
    loader = botocore.session.get_session().get_component("data_loader")
    regions = [r for p in loader.load_data("partitions")["partitions"] for r in p["regions"]]
    assert len(regions) > 40
    for region in regions:
        for fips in (False, True):
            expected = rules.resolve_endpoint(Region=region, UseFIPS=fips, UseDualStack=False)
            assert derive_endpoint(region, fips) == expected.url, (region, fips)


def test_the_partition_table_is_botocores() -> None:
    loader = botocore.session.get_session().get_component("data_loader")
    theirs = loader.load_data("partitions")["partitions"]
    assert [(p.name, p.pattern.pattern, p.dns_suffix) for p in PARTITIONS] == [
        (p["id"], p["regionRegex"], p["outputs"]["dnsSuffix"]) for p in theirs
    ]
    for p in theirs:
        assert p["outputs"]["supportsFIPS"]  # derive_endpoint assumes every one has FIPS
        for region in p["regions"]:
            assert partition(region).name == p["id"], region


# region ----------------------------------------------------------------------------------


def test_no_region_anywhere_fails_at_build_naming_every_way_to_set_one(aws_env: Path) -> None:
    with pytest.raises(BotoCoreError, match="You must specify a region"):
        botocore_request()
    with pytest.raises(ConfigError) as raised:
        ours(endpoint_url="http://127.0.0.1:8000")
    message = str(raised.value)
    assert "DynamoDB backend 'ddb' has no region" in message
    for way in ("backends.ddb.region", "AWS_REGION", "AWS_DEFAULT_REGION", "profile 'default'"):
        assert way in message
    assert str(aws_env) in message


def test_the_backends_region_wins(aws_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-2")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    aws_env.write_text("[default]\nregion = eu-central-1\n")
    target = ours(region="ap-south-1")
    assert (target.region, target.region_source) == ("ap-south-1", "backends.ddb.region")
    assert target.url == "https://dynamodb.ap-south-1.amazonaws.com"


def test_aws_region_before_aws_default_region(
    aws_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS_REGION is what every other AWS SDK and the AWS CLI v2 read (botocore reads only
    AWS_DEFAULT_REGION): when both are set, AWS_REGION wins."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_REGION", "eu-west-2")
    assert ours().region == "eu-west-2"
    monkeypatch.delenv("AWS_REGION")
    assert ours().region == "eu-west-3" == botocore_request()[1]


def test_the_environment_beats_the_profile(aws_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    aws_env.write_text("[default]\nregion = eu-central-1\n")
    assert ours().region == "eu-central-1" == botocore_request()[1]
    assert "profile 'default'" in ours().region_source
    monkeypatch.setenv("AWS_DEFAULT_REGION", "sa-east-1")
    assert ours().region == "sa-east-1" == botocore_request()[1]


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"AWS_PROFILE": "a"}, "eu-west-2"),
        ({"AWS_DEFAULT_PROFILE": "b"}, "eu-west-3"),
        ({"AWS_PROFILE": "a", "AWS_DEFAULT_PROFILE": "b"}, "eu-west-3"),  # botocore's order
        ({}, "eu-west-1"),
    ],
)
def test_the_profile_is_chosen_as_botocore_chooses(
    aws_env: Path, monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], expected: str
) -> None:
    aws_env.write_text(
        "[default]\nregion = eu-west-1\n"
        "[profile a]\nregion = eu-west-2\n"
        '[profile "b"]\nregion = eu-west-3\n'
        "[a]\nregion = us-west-1\n"  # not a profile of the config file
    )
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert botocore_request()[1] == expected
    target = ours()
    assert target.region == expected
    assert target.profile == (variables.get("AWS_DEFAULT_PROFILE") or variables.get("AWS_PROFILE"))
    assert botocore.session.Session().profile == target.profile


def test_the_backends_profile_wins_and_goes_to_the_credentials(
    aws_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws_env.write_text("[profile a]\nregion = eu-west-2\n[profile c]\nregion = ap-east-1\n")
    monkeypatch.setenv("AWS_PROFILE", "a")
    target = ours(profile="c")
    assert (target.region, target.profile) == ("ap-east-1", "c")
    store = build_store(backend(profile="c"), "t", SCHEMA, dict(os.environ), name="ddb")
    assert store._http.profile == "c"  # type: ignore[attr-defined]


def test_a_region_in_the_credentials_file_counts_as_in_botocore(
    aws_env: Path, tmp_path: Path
) -> None:
    (tmp_path / "credentials").write_text("[default]\nregion = me-south-1\n")
    assert ours().region == "me-south-1" == botocore_request()[1]


@pytest.mark.parametrize("variable", ["AWS_PROFILE", "AWS_DEFAULT_PROFILE"])
def test_a_missing_named_profile_is_a_config_error(
    aws_env: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "nope")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    with pytest.raises(BotoCoreError, match="could not be found"):
        botocore_request()
    with pytest.raises(ConfigError, match=f"{variable} = 'nope': no such AWS profile"):
        ours()
    with pytest.raises(
        ConfigError, match=re.escape("backends.ddb.profile = 'zz': no such AWS profile")
    ):
        ours(profile="zz")


def test_a_bad_region_from_the_environment_names_its_source(
    aws_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_REGION", "eu west 1")
    with pytest.raises(ConfigError, match=r"AWS_REGION = 'eu west 1': not a region name"):
        ours()


def test_an_unreadable_config_file_is_a_config_error(aws_env: Path) -> None:
    aws_env.write_text("region = eu-west-1\n")  # no section
    with pytest.raises(ConfigError, match=f"AWS config file {aws_env}: cannot be parsed"):
        ours(region="eu-west-1")


# endpoint --------------------------------------------------------------------------------


ENDPOINT_SOURCES = [
    ("config", "http://config:1"),
    ("AWS_ENDPOINT_URL_DYNAMODB", "http://service-env:2"),
    ("AWS_ENDPOINT_URL", "http://global-env:3"),
    ("services", "http://services-section:4"),
    ("profile", "http://profile:5"),
]


@pytest.mark.parametrize("first", range(len(ENDPOINT_SOURCES)))
def test_the_endpoint_is_looked_up_in_botocores_order(
    aws_env: Path, monkeypatch: pytest.MonkeyPatch, first: int
) -> None:
    """Every source from ``first`` on is set; the first of them wins, in both."""
    present = dict(ENDPOINT_SOURCES[first:])
    profile = ["[default]", "region = eu-west-1"]
    if "profile" in present:
        profile.append(f"endpoint_url = {present['profile']}")
    if "services" in present:
        profile += ["services = mine", "[services mine]", "dynamodb =", "  endpoint_url = "]
        profile[-1] += present["services"]
    aws_env.write_text("\n".join(profile) + "\n")
    for name in ("AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL"):
        if name in present:
            monkeypatch.setenv(name, present[name])
    expected = next(iter(present.values()))
    assert botocore_request(endpoint_url=present.get("config"))[0] == expected
    target = ours(endpoint_url=present.get("config"))
    assert (target.url, target.endpoint_url, target.region) == (expected, expected, "eu-west-1")


def test_configured_endpoints_can_be_ignored_as_in_botocore(
    aws_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws_env.write_text("[default]\nregion = eu-west-1\nendpoint_url = http://profile:5\n")
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://service-env:2")
    monkeypatch.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    derived = "https://dynamodb.eu-west-1.amazonaws.com"
    assert botocore_request()[0] == ours().url == derived
    assert ours().endpoint_url is None
    # the backend's own key is not "configured" in that sense: it is the client's argument
    assert botocore_request(endpoint_url="http://x:1")[0] == ours(endpoint_url="http://x:1").url


def test_a_services_section_that_does_not_exist_is_a_config_error(
    aws_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws_env.write_text("[default]\nregion = eu-west-1\nservices = gone\n")
    with pytest.raises(BotoCoreError, match="services"):
        botocore_request()
    with pytest.raises(ConfigError, match=r"'gone': no \[services gone\] section"):
        ours()
    # looked for only when no endpoint comes before it, in both
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://global-env:3")
    assert botocore_request()[0] == ours().url == "http://global-env:3"


def test_a_bad_endpoint_from_the_environment_names_its_source(
    aws_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "localhost:8000")
    with pytest.raises(ConfigError, match="AWS_ENDPOINT_URL_DYNAMODB: DynamoDB endpoint"):
        ours(region="us-east-1")


# FIPS ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "env", "profile", "expected"),
    [
        (None, "true", None, True),
        (None, "TRUE", None, True),
        (None, "1", None, False),  # botocore's ensure_boolean: only "true"
        (None, None, "true", True),
        (None, "false", "true", False),
        (False, "true", "true", False),
        (True, None, None, True),
    ],
)
def test_fips_is_looked_up_in_botocores_order(
    aws_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    config: bool | None,
    env: str | None,
    profile: str | None,
    expected: bool,
) -> None:
    lines = ["[default]", "region = us-west-2"]
    if profile is not None:
        lines.append(f"use_fips_endpoint = {profile}")
    aws_env.write_text("\n".join(lines) + "\n")
    if env is not None:
        monkeypatch.setenv("AWS_USE_FIPS_ENDPOINT", env)
    url = botocore_request(use_fips=config)[0]
    assert url == f"https://dynamodb{'-fips' if expected else ''}.us-west-2.amazonaws.com"
    target = ours(use_fips=config)
    assert (target.url, target.use_fips) == (url, expected)


def test_a_configured_endpoint_wins_over_fips(
    aws_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_USE_FIPS_ENDPOINT", "true")
    url = botocore_request("us-east-1", endpoint_url="http://127.0.0.1:8000")[0]
    target = ours(region="us-east-1", endpoint_url="http://127.0.0.1:8000")
    assert (target.url, target.use_fips) == (url, False) == ("http://127.0.0.1:8000", False)


# CA bundle -------------------------------------------------------------------------------


@pytest.fixture
def bundles(tmp_path: Path) -> dict[str, str]:
    paths = {}
    for name in ("config", "env", "profile"):
        path = tmp_path / f"{name}.pem"
        path.write_text("not read here\n")
        paths[name] = str(path)
    return paths


@pytest.mark.parametrize("first", ["config", "env", "profile", None])
def test_the_ca_bundle_is_looked_up_in_botocores_order(
    aws_env: Path, monkeypatch: pytest.MonkeyPatch, bundles: dict[str, str], first: str | None
) -> None:
    order = ["config", "env", "profile"]
    present = order[order.index(first) :] if first else []
    lines = ["[default]", "region = eu-west-1"]
    if "profile" in present:
        lines.append(f"ca_bundle = {bundles['profile']}")
    aws_env.write_text("\n".join(lines) + "\n")
    if "env" in present:
        monkeypatch.setenv("AWS_CA_BUNDLE", bundles["env"])
    config = bundles["config"] if "config" in present else None
    expected = bundles[first] if first else None
    session = botocore.session.Session()
    assert (config or session.get_config_variable("ca_bundle")) == expected
    assert ours(ca_bundle=config).ca_bundle == expected


def test_plain_http_needs_no_ca_bundle(
    aws_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_CA_BUNDLE", str(tmp_path / "missing.pem"))
    target = ours(region="us-east-1", endpoint_url="http://127.0.0.1:8000")
    assert target.ca_bundle is None
    with pytest.raises(ConfigError, match=r"AWS_CA_BUNDLE = '.*missing.pem': no such file"):
        ours(region="us-east-1")
    with pytest.raises(ConfigError, match=r"backends.ddb.ca_bundle = '/no/such.pem': no such"):
        ours(region="us-east-1", ca_bundle="/no/such.pem")


# settings and building -------------------------------------------------------------------


RESOURCE = ResourceSettings.model_validate(
    {
        "name": "users",
        "prefix": "/users",
        "key": "id",
        "fields": {"id": {"type": "uuid"}},
        "stores": {"dynamodb": {"backend": "dynamo-eu", "table": "users"}},
        "flags": {"read_from": "dynamodb", "write_to": ["dynamodb"]},
    }
)
SCHEMA = Schema(RESOURCE)


def test_the_settings_have_no_default_region() -> None:
    model = backend()
    assert (model.region, model.profile, model.use_fips, model.ca_bundle) == (None,) * 4


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("region", "eu west 1", "backends.ddb.region = 'eu west 1': not a region name"),
        ("endpoint_url", "localhost:8000", "backends.ddb.endpoint_url = 'localhost:8000': "),
        ("endpoint_url", "http://x/path", "a path or query is not supported"),
        ("profile", " ", "backends.ddb.profile = ' ': must not be empty"),
        ("ca_bundle", "", "backends.ddb.ca_bundle = '': must not be empty"),
        ("use_fips", "maybe", "backends.ddb.use_fips = 'maybe'"),
        ("regoin", "eu-west-1", "backends.ddb.regoin: unknown key"),
    ],
)
def test_bad_settings_name_the_key_and_the_value(key: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError, match="x") as raised:
        settings_from_mapping({"backends": {"ddb": {"kind": "dynamodb", key: value}}}, source="x")
    assert says in str(raised.value)


def test_building_the_stores_resolves_with_the_backends_name(
    aws_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backends: dict[str, Any] = {"dynamo-eu": backend()}
    with pytest.raises(ConfigError, match=re.escape("set backends.dynamo-eu.region")):
        build_stores(RESOURCE, backends, SCHEMA, dict(os.environ))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "cn-north-1")
    monkeypatch.setenv("AWS_USE_FIPS_ENDPOINT", "true")
    store = build_stores(RESOURCE, backends, SCHEMA, dict(os.environ))["dynamodb"]
    client = store._http  # type: ignore[attr-defined]
    assert (client.region, client.endpoint.host) == (
        "cn-north-1",
        "dynamodb-fips.cn-north-1.amazonaws.com.cn",
    )
    assert client._signer.region == "cn-north-1"
