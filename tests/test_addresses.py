"""Which addresses count as one for the per-address limits (chatkit.addresses)."""

from __future__ import annotations

import pytest

from chatkit import Config, UsageError
from chatkit.addresses import address_key
from chatkit.config import Limits
from chatkit.testing import ChatClient, run_server


def test_an_ipv6_network_counts_as_one_address() -> None:
    """IPv4 addresses count alone; an IPv6 one counts as its /64 (or as set); an
    IPv4-mapped one as its IPv4 address; a zone is left out; a name stays itself."""
    assert address_key("203.0.113.7") == "203.0.113.7"
    assert (
        address_key("2001:db8:1:2::1")
        == address_key("2001:db8:1:2:ffff::9")
        == ("2001:db8:1:2::/64")
    )
    assert address_key("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert address_key("2001:db8:1:3::1", 48) == address_key("2001:db8:1:ffff::1", 48)
    assert address_key("2001:db8::1", 128) == "2001:db8::1/128"
    assert address_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert address_key("fe80::1%eth0") == "fe80::/64"
    assert address_key("not-an-address") == "not-an-address"


def test_ipv6_prefix_is_a_limit_of_at_most_128_bits() -> None:
    assert Limits().ipv6_prefix == 64
    with pytest.raises(UsageError, match="ipv6_prefix"):
        Limits(ipv6_prefix=129)
    with pytest.raises(UsageError, match="ipv6_prefix"):
        Limits(ipv6_prefix=0)


def test_the_server_counts_an_ipv6_client_by_its_network() -> None:
    """max_clients_per_address counts an IPv6 client's /64: the refusal names it."""
    config = Config(host="::1")
    with run_server(config=config, max_clients_per_address=1, limit_loopback=True) as server:
        first = ChatClient(server.address)
        first.login("alice")
        second = ChatClient(server.address)
        error = second.expect("error", code="too_many_connections")
        assert "from ::/64" in error["text"]
        first.close()
        second.close()
