"""Which client addresses count as one for the per-address limits.

An IPv4 address is one client's (or one NAT's). An IPv6 host usually holds a whole
network: a home or a server is handed a /64, 2^64 addresses, so counting addresses
one by one would let one client open as many connections, and try as many
passwords, as it likes. Its network of ``ipv6_prefix`` bits (``[limits]``, 64 by
default) counts as one address instead, as IRC servers do.
"""

from __future__ import annotations

import functools
import ipaddress

__all__ = ["IPV6_PREFIX", "address_key"]

IPV6_PREFIX = 64  # bits of an IPv6 address that are one client's: a /64 is a host's or a home's


@functools.lru_cache(maxsize=4096)
def address_key(host: str, ipv6_prefix: int = IPV6_PREFIX) -> str:
    """The key ``host`` counts under: an IPv4 address itself (an IPv4-mapped IPv6 one
    as its IPv4 address), an IPv6 one as its network of ``ipv6_prefix`` bits
    (``2001:db8:1:2::/64``); anything else (a Unix socket's name) as it is."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])  # without an IPv6 zone
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, ipv6_prefix), strict=False))
    return str(ip)
