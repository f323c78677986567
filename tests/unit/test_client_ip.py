"""The audit trail's source IP: the peer, or behind a trusted proxy the nearest
address the proxies did not add themselves."""

from __future__ import annotations

from ipaddress import ip_network

import pytest
from falcon import testing

from api.middleware import client_ip

PROXY = (ip_network("10.0.0.0/24"),)


def _req(peer: str, forwarded: str | None = None):  # type: ignore[no-untyped-def]
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return testing.create_req(remote_addr=peer, headers=headers)


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert client_ip(_req("203.0.113.7", "198.51.100.1"), ()) == "203.0.113.7"


def test_a_peer_that_is_not_a_trusted_proxy_cannot_forge_its_address() -> None:
    assert client_ip(_req("203.0.113.7", "198.51.100.1"), PROXY) == "203.0.113.7"


def test_behind_a_trusted_proxy_the_client_address_is_used() -> None:
    assert client_ip(_req("10.0.0.5", "198.51.100.1"), PROXY) == "198.51.100.1"


def test_addresses_a_client_prepends_are_not_believed() -> None:
    # The client sent "X-Forwarded-For: 1.2.3.4"; the proxy appended the real one.
    assert client_ip(_req("10.0.0.5", "1.2.3.4, 198.51.100.1"), PROXY) == "198.51.100.1"


def test_a_chain_of_trusted_proxies_is_walked_from_the_right() -> None:
    assert client_ip(_req("10.0.0.5", "198.51.100.1, 10.0.0.9"), PROXY) == "198.51.100.1"


@pytest.mark.parametrize("garbage", ["not-an-ip", "<script>", "1.2.3.4.5"])
def test_garbage_in_the_header_falls_back_to_the_peer(garbage: str) -> None:
    assert client_ip(_req("10.0.0.5", garbage), PROXY) == "10.0.0.5"


def test_a_scoped_ipv6_address_is_not_taken_as_the_client() -> None:
    # A zone can make the "address" as long as the client likes: the peer is kept.
    scoped = "2001:db8::1%" + "A" * 100
    assert client_ip(_req("10.0.0.5", scoped), PROXY) == "10.0.0.5"
