"""Which address a request comes from, for limits on failed authentication.

A forwarding header is only as honest as whoever wrote it: anyone can send ``X-Forwarded-For``, so
the header is read only when the connection comes from a configured trusted proxy
(``TENANCY_SERVICE_TRUSTED_PROXIES``), and then from the right: each trusted proxy appends the
address it saw, so the rightmost address that is not itself a trusted proxy is the client. Whatever
lies left of it was written by the client and is ignored.

IPv6 clients are counted per /64: one host usually holds a whole /64, and counting single addresses
would let it rotate through them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

UNKNOWN = "unknown"


def parse_address(text: str) -> IPAddress | None:
    """An address as proxies write it (``1.2.3.4``, ``1.2.3.4:5678``, ``2001:db8::1``,
    ``[2001:db8::1]:443``); IPv4-mapped IPv6 as IPv4; None for anything else."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else text
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPAddress, proxies: Sequence[IPNetwork]) -> bool:
    return any(address.version == network.version and address in network for network in proxies)


def client_address(peer: str | None, forwarded_for: Iterable[str], proxies: Sequence[IPNetwork]) -> str:
    """The client's address: the peer's own, unless the peer is a trusted proxy; then the rightmost
    ``X-Forwarded-For`` hop that is not a trusted proxy (``forwarded_for``: every such header, in order)."""
    current = parse_address(peer) if peer else None
    if current is None:
        return peer or UNKNOWN
    if not proxies or not _trusted(current, proxies):
        return str(current)
    hops = [hop for header in forwarded_for for hop in header.split(",") if hop.strip()]
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            break  # not written by a proxy we trust: stop at the last one we do
        current = address
        if not _trusted(address, proxies):
            break
    return str(current)


def failure_key(address: str) -> str:
    """The key failed authentications of ``address`` count under (its /64 for IPv6)."""
    parsed = parse_address(address)
    if parsed is None:
        return f"ip:{UNKNOWN}"
    if isinstance(parsed, ipaddress.IPv6Address):
        return f"ip:{ipaddress.IPv6Network((parsed, 64), strict=False)}"
    return f"ip:{parsed}"
