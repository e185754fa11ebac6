"""CIDR fields: one parser and one wording for every list of networks the platform config takes
(``kubernetesApiCidrs``, ``adminSourceCidrs``, ``gatewayCidrs``, ``gitHosts.cidrs``, ``vault.cidrs``,
``objectStorage.cidrs``) and for the service's trusted proxies.

A value is what ``ipaddress.ip_network`` reads with ``strict=True``, written back canonically (as the
NetworkPolicies and AuthorizationPolicies carry it): ``10.0.0.0/16``, ``2001:db8::/64``, a bare address
as that one address (``10.0.0.2`` → ``10.0.0.2/32``), a netmask as its prefix length. Host bits set
(``10.0.0.2/24``) are refused, naming both readings, since either could have been meant, and so is
an IPv6 zone (``fe80::%eth0/64``), which ipaddress keeps and Kubernetes refuses at deploy. Lists that
exist to narrow where connections go also refuse a network covering every address (``/0``).
"""

from __future__ import annotations

import ipaddress
from functools import partial
from typing import Annotated

from pydantic import AfterValidator

EXAMPLES = "such as 10.0.0.0/16, 10.0.0.2/32 or 2001:db8::/64"


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(value: str, *, narrowing: str | None = None) -> Network:
    """``value`` as a network; ValueError naming the value and what to write otherwise.
    ``narrowing``: what to do instead of a network covering every address, which is then refused."""
    if "%" in value:  # ipaddress reads an IPv6 zone (fe80::%eth0/64) and writes it back with the zone
        raise ValueError(
            f"{value!r} is not a CIDR: a zone (%...) names one host's interface, which no NetworkPolicy, "
            "AuthorizationPolicy or proxy list takes; write the network without it"
        )
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is not a CIDR {EXAMPLES}") from None
        address = value.split("/", 1)[0]
        raise ValueError(
            f"{value!r} is not a CIDR: it has host bits set; write {loose} for the network or "
            f"{address}/{loose.max_prefixlen} for the one address"
        ) from None
    if narrowing is not None and network.prefixlen == 0:
        raise ValueError(f"{value!r} covers every address, which narrows nothing; {narrowing}")
    return network


def parse_cidr(value: str, *, narrowing: str | None = None) -> str:
    """``value`` as a canonical CIDR (``parse_network``'s network, written back)."""
    return str(parse_network(value, narrowing=narrowing))


Cidr = Annotated[str, AfterValidator(parse_cidr)]


def narrowing(instead: str) -> AfterValidator:
    """The check of a CIDR in a list that narrows where connections go: ``Annotated[str,
    narrowing("list Vault's addresses only")]`` refuses ``/0``, saying what to do ``instead``."""
    return AfterValidator(partial(parse_cidr, narrowing=instead))
