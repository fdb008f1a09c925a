"""Which addresses are the operator's own network: one rule for the API (a webhook URL that names
an address) and the worker (what a target resolves to, `activities/netpolicy.py`)."""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_SHARED = ipaddress.ip_network("100.64.0.0/10")


def is_internal(ip: IPAddress) -> bool:
    """Whether `ip` is an address of the operator's own network rather than the internet:
    loopback, link-local (cloud metadata), private, shared (100.64/10), multicast, reserved or
    unspecified, an IPv4-mapped IPv6 address judged as its IPv4 one."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_loopback
        or ip.is_link_local
        or ip.is_private
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED)
    )
