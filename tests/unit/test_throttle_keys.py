"""The request throttles key a source as the attempt limits do: IPv6 by its /64 (one
host holds a whole /64), an IPv4-mapped address as its IPv4 one."""

from __future__ import annotations

from domain.throttles import auth_failure_key, refusal_key


def test_addresses_of_one_ipv6_64_share_one_failed_authentication_budget() -> None:
    assert auth_failure_key("2001:db8::1") == auth_failure_key("2001:db8::ffff:2")
    assert auth_failure_key("2001:db8::1") != auth_failure_key("2001:db8:0:1::1")


def test_addresses_of_one_ipv6_64_share_one_refusal_budget_per_token() -> None:
    assert refusal_key("tok", "2001:db8::1") == refusal_key("tok", "2001:db8::2")
    assert refusal_key("tok", "2001:db8::1") != refusal_key("other", "2001:db8::1")


def test_an_ipv4_mapped_address_is_its_ipv4_source() -> None:
    assert auth_failure_key("::ffff:192.0.2.7") == auth_failure_key("192.0.2.7")
    assert refusal_key(None, "::ffff:192.0.2.7") == refusal_key(None, "192.0.2.7")
