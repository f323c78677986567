"""What a source is, for every budget counted per source: the visitor's address, else
the caller's; IPv6 by its /64 (one host holds a whole /64), IPv4-mapped IPv6 as IPv4.
Pure, so the attempt limits and the request throttles key a source the same way."""

from __future__ import annotations

import ipaddress

UNKNOWN_SOURCE = "unknown"


def source_key(client_ip: str | None, caller_ip: str | None) -> str:
    """What a per-source budget is keyed by: the visitor's address, else the caller's;
    IPv6 by its /64 (one host holds a whole /64), IPv4-mapped IPv6 as IPv4."""
    raw = client_ip or caller_ip
    if not raw:
        return UNKNOWN_SOURCE
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return raw[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
