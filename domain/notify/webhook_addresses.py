"""Which addresses a webhook may reach (pure): the SSRF rules of the contract.

Only public addresses by default. `loopback` (the embedded default) also admits
loopback and plain http://; `private` admits RFC 1918 and ULA besides. Link-local
(cloud metadata at 169.254.169.254), CGNAT, multicast, 0.0.0.0/8 and the other
reserved ranges are never admitted, nor an IPv6 form of anything refused: a
mapped, 6to4, NAT64 or IPv4-translated address is judged as the IPv4 address it
carries, and the IPv4-compatible and site-local forms are refused outright.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from urllib.parse import SplitResult, urlsplit


class AllowPrivate(StrEnum):
    NONE = ""
    LOOPBACK = "loopback"
    PRIVATE = "private"


_RFC1918 = (IPv4Network("10.0.0.0/8"), IPv4Network("172.16.0.0/12"), IPv4Network("192.168.0.0/16"))
_ULA = IPv6Network("fc00::/7")


# IPv6 forms that carry an IPv4 address in their last 32 bits, and reach it: NAT64
# (RFC 6052, 8215) and SIIT's IPv4-translated form. They are judged as that address.
_EMBEDDING_IPV4 = (
    IPv6Network("64:ff9b::/96"),
    IPv6Network("64:ff9b:1::/48"),
    IPv6Network("::ffff:0:0:0/96"),
)
# Never admitted: the deprecated IPv4-compatible form (::a.b.c.d) and site-local.
_REFUSED_V6 = (IPv6Network("::/96"), IPv6Network("fec0::/10"))


def _unmapped(addr: IPv4Address | IPv6Address) -> IPv4Address | IPv6Address | None:
    """The address a connection really reaches, or None for a form never admitted."""
    if isinstance(addr, IPv6Address):
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
        if addr.sixtofour is not None:
            return addr.sixtofour
        if any(addr in net for net in _EMBEDDING_IPV4):
            return IPv4Address(int(addr) & 0xFFFFFFFF)
        if addr.is_loopback:
            return addr
        if any(addr in net for net in _REFUSED_V6):
            return None
    return addr


@lru_cache(maxsize=1024)  # pure, and asked at every attempt for the same few addresses
def admitted(address: str, allow: AllowPrivate) -> bool:
    """May a delivery connect to `address` (a literal IP) under `allow`?"""
    try:
        addr = _unmapped(ip_address(address.split("%", 1)[0]))
    except ValueError:
        return False
    if addr is None:
        return False
    if addr.is_multicast or addr.is_link_local or addr.is_unspecified:
        return False
    if addr.is_loopback:
        return allow in (AllowPrivate.LOOPBACK, AllowPrivate.PRIVATE)
    if isinstance(addr, IPv4Address) and any(addr in net for net in _RFC1918):
        return allow == AllowPrivate.PRIVATE
    if isinstance(addr, IPv6Address) and addr in _ULA:
        return allow == AllowPrivate.PRIVATE
    # Everything else must be globally routable: CGNAT (100.64/10), 0/8, documentation
    # and benchmarking ranges, 240/4 are not.
    return addr.is_global


@lru_cache(maxsize=1024)  # pure, and asked at every attempt
def literal_address(host: str) -> str | None:
    """The host as an IP literal (brackets removed), or None for a name."""
    try:
        return str(ip_address(host.strip("[]")))
    except ValueError:
        return None


def url_problem(url: str, allow: AllowPrivate) -> str | None:
    """Why `url` cannot be a webhook's address (checked at creation), or None."""
    try:
        parts: SplitResult = urlsplit(url)
        port = parts.port
    except ValueError:
        return "the url is not valid"
    plain_http_ok = allow in (AllowPrivate.LOOPBACK, AllowPrivate.PRIVATE)
    if parts.scheme != "https" and not (parts.scheme == "http" and plain_http_ok):
        return "the url must be https://"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return "the url may not carry user information"
    host = parts.hostname
    if not host:
        return "the url names no host"
    if port == 0:
        return "the url's port is not valid"
    if parts.fragment:
        return "the url may not carry a fragment"
    literal = literal_address(host)
    if literal is not None and not admitted(literal, allow):
        return "the url names an address that is not admitted"
    return None
