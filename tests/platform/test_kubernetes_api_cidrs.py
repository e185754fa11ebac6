"""``platform:kubernetesApiCidrs``: the API server addresses, the only place a tenant's vCluster may
connect to outside the cluster's pods."""

from __future__ import annotations

import pytest

from tenancy.spec.errors import SpecError
from tenancy.spec.platform import parse_platform_config, read_platform_config_file
from tests.conftest import PROJECT_DIR


def parse(cidrs: object) -> list[str]:
    config = parse_platform_config(
        {"domain": "dev.example.com", "kubernetesApiCidrs": cidrs}, environment="dev", file="Pulumi.dev.yaml"
    )
    return config.kubernetes_api_cidrs


def test_api_server_addresses_are_cidrs_in_both_families() -> None:
    assert parse(["10.0.0.2/32", "172.16.0.0/28", "fd00::1/128"]) == [
        "10.0.0.2/32",
        "172.16.0.0/28",
        "fd00::1/128",
    ]


def test_one_api_server_address_may_be_written_without_its_prefix_length() -> None:
    """As every other CIDR list of the platform config takes it (this one alone refused it once)."""
    assert parse(["10.0.0.2", "fd00::1"]) == ["10.0.0.2/32", "fd00::1/128"]


def test_api_server_addresses_default_to_none() -> None:
    config = parse_platform_config({"domain": "dev.example.com"}, environment="dev", file="Pulumi.dev.yaml")
    assert config.kubernetes_api_cidrs == []


@pytest.mark.parametrize(
    ("cidr", "reason"),
    [
        (
            "10.0.0.2/28",
            "host bits set; write 10.0.0.0/28 for the network or 10.0.0.2/32 for the one address",
        ),
        ("0.0.0.0/0", "covers every address"),
        ("::/0", "covers every address"),
        ("api.example.com/32", "is not a CIDR"),
    ],
)
def test_api_server_addresses_refuse_what_is_not_a_narrow_network(cidr: str, reason: str) -> None:
    with pytest.raises(SpecError) as error:
        parse([cidr])
    [issue] = error.value.issues
    assert (issue.file, issue.field) == ("Pulumi.dev.yaml", "platform:kubernetesApiCidrs.0")
    assert reason in issue.reason


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_both_environments_name_their_api_server(environment: str) -> None:
    # The example tenants of both environments run vClusters, whose stacks refuse an empty list.
    config = read_platform_config_file(PROJECT_DIR / f"Pulumi.{environment}.yaml")
    assert config.kubernetes_api_cidrs
