"""Every CIDR field of the platform config reads a CIDR the same way and says what is wrong the same
way, naming the field and the item: one parser (``tenancy.spec.cidr``), not one per field."""

from __future__ import annotations

from typing import Any

import pytest

from tenancy.spec.errors import SpecError
from tenancy.spec.platform import PlatformConfig, parse_platform_config

# (the key's path in Pulumi.<env>.yaml, whether the list takes a network covering every address)
FIELDS = [
    ("kubernetesApiCidrs", False),
    ("adminSourceCidrs", True),
    ("gatewayCidrs", False),
    ("gitHosts.cidrs", True),
    ("vault.cidrs", False),
    ("objectStorage.cidrs", False),
]
_STORE = {"endpoint": "https://s3.example.com", "lokiBucket": "logs", "backupBucket": "backups"}


def _values(path: str, cidrs: list[Any]) -> dict[str, Any]:
    values: dict[str, Any] = {"domain": "dev.example.com"}
    if path == "objectStorage.cidrs":
        values["objectStorage"] = {**_STORE, "cidrs": cidrs}
    elif "." in path:
        section, key = path.split(".")
        values[section] = {key: cidrs}
    else:
        values[path] = cidrs
    return values


def _read(config: PlatformConfig, path: str) -> Any:
    value: Any = config
    for part in path.split("."):
        value = getattr(value, _snake(part))
    return value


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def parse(path: str, cidrs: list[Any]) -> list[str]:
    config = parse_platform_config(_values(path, cidrs), environment="dev", file="Pulumi.dev.yaml")
    return list(_read(config, path))


def refusal(path: str, cidrs: list[Any]) -> tuple[str, str]:
    with pytest.raises(SpecError) as caught:
        parse(path, cidrs)
    [issue] = caught.value.issues
    return issue.field, issue.reason


@pytest.mark.parametrize(("path", "everything"), FIELDS)
def test_every_cidr_field_accepts_and_writes_the_same_networks(path: str, everything: bool) -> None:
    written = ["10.0.0.0/16", "10.0.0.2", "10.0.0.0/255.255.255.0", "2001:DB8::/64", "fd00::1"]
    assert parse(path, written) == [
        "10.0.0.0/16",
        "10.0.0.2/32",
        "10.0.0.0/24",
        "2001:db8::/64",
        "fd00::1/128",
    ]
    if everything:
        assert parse(path, ["0.0.0.0/0", "::/0"]) == ["0.0.0.0/0", "::/0"]


@pytest.mark.parametrize(("path", "everything"), FIELDS)
def test_every_cidr_field_refuses_in_one_wording_naming_the_item(path: str, everything: bool) -> None:
    field = f"platform:{path}.1"
    assert refusal(path, ["10.0.0.0/8", "10.0.0.2/24"]) == (
        field,
        "'10.0.0.2/24' is not a CIDR: it has host bits set; write 10.0.0.0/24 for the network or "
        "10.0.0.2/32 for the one address",
    )
    for text in ("git.example.com", "10.0.0.0/33", " 10.0.0.0/8", "10.0.0.0/8,10.1.0.0/16", ""):
        assert refusal(path, ["10.0.0.0/8", text]) == (
            field,
            f"{text!r} is not a CIDR such as 10.0.0.0/16, 10.0.0.2/32 or 2001:db8::/64",
        )
    if not everything:
        assert refusal(path, ["10.0.0.0/8", "::/0"])[0] == field
        assert refusal(path, ["10.0.0.0/8", "::/0"])[1].startswith(
            "'::/0' covers every address, which narrows nothing;"
        )


@pytest.mark.parametrize(("path", "everything"), FIELDS)
def test_an_ipv6_zone_is_refused_by_every_cidr_field(path: str, everything: bool) -> None:
    """ipaddress reads fe80::%eth0/64 and writes it back with its zone, which went into NetworkPolicy
    ipBlocks and AuthorizationPolicies (the API server refuses it at deploy, not at validate)."""
    for text in ("fe80::%eth0/64", "fe80::1%1", "fe80::1%25eth0/128"):
        field, reason = refusal(path, ["10.0.0.0/8", text])
        assert field == f"platform:{path}.1"
        assert reason.startswith(f"{text!r} is not a CIDR: a zone (%...) names one host's interface")


def test_the_trusted_proxies_refuse_an_ipv6_zone() -> None:
    from tenancy.spec.cidr import parse_cidr

    with pytest.raises(ValueError, match="a zone"):
        parse_cidr("fe80::%eth0/64")
    assert parse_cidr("fe80::/64") == "fe80::/64"
