"""Where the worker may connect on someone else's behalf: egress of sandboxed steps, webhooks.

The worker sits inside the operator's network, next to Temporal, the API, databases and cloud
metadata services. A pack author choosing an allowlist entry, or a tenant registering a webhook
URL, must not be able to point the worker at those. So a target is resolved by the worker, and
every address it resolves to is checked: loopback, link-local (169.254.0.0/16, where cloud
metadata lives), private (RFC 1918, fc00::/7), shared (100.64.0.0/10), multicast, reserved and
unspecified addresses are refused unless the operator allows internal targets; the Temporal
frontend (and any address the operator lists) is refused always. The connection then goes to
the address that was checked, so a name cannot resolve differently a moment later.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from workflows.contract.addresses import is_internal

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""Looks a host up: `await resolver(host, port)` gives its addresses (texts), [] or OSError when
it does not resolve."""


class TargetRefused(Exception):
    """A target the policy refuses; the message says why (never a secret)."""


async def system_resolver(host: str, port: int) -> list[str]:
    """The host's own resolver (getaddrinfo)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class TargetPolicy:
    """`allow_internal`: the operator's opt-in to internal targets; `never`: host:port pairs
    refused whatever else is allowed (the Temporal frontend); `resolver`: how names are looked
    up (the system's when None; tests give one whose answers change, as a rebinding name's do)."""

    allow_internal: bool = False
    never: frozenset[tuple[str, int]] = field(default_factory=frozenset)
    resolver: Resolver | None = field(default=None, compare=False)

    @classmethod
    def build(cls, allow_internal: bool, never: Iterable[str] = ()) -> TargetPolicy:
        pairs: set[tuple[str, int]] = set()
        for entry in never:
            host, _, port = entry.rpartition(":")
            if host and port.isdigit():
                pairs.add((host.strip("[]").lower(), int(port)))
        return cls(allow_internal, frozenset(pairs))

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses to connect to for `host:port`; TargetRefused when any is refused."""
        host = host.strip("[]").lower()
        try:
            addresses = sorted(set(await self._lookup(host, port)))
        except OSError:
            raise TargetRefused(f"{host} does not resolve") from None
        if not addresses:
            raise TargetRefused(f"{host} does not resolve")
        never_ips, never_internal_ports = await self._never_addresses()
        for text in addresses:
            ip = ipaddress.ip_address(text.split("%", 1)[0])
            internal = is_internal(ip)
            if (
                (host, port) in self.never
                or (str(ip), port) in never_ips
                or (internal and port in never_internal_ports)
            ):
                raise TargetRefused(f"{host}:{port} is the cluster's own service")
            if internal and not self.allow_internal:
                raise TargetRefused(
                    f"{host} resolves to {ip}, an internal address (loopback, link-local or "
                    "private); the operator has not allowed internal targets"
                )
        return addresses

    async def _never_addresses(self) -> tuple[set[tuple[str, int]], set[int]]:
        """The refused (address, port) pairs, and the ports refused on every internal address
        (a service on loopback or an internal address may be reached through any of the
        host's internal addresses)."""
        pairs: set[tuple[str, int]] = set()
        ports: set[int] = set()
        for host, port in self.never:
            try:
                found = await self._lookup(host, port)
            except OSError:
                continue
            for text in found:
                ip = ipaddress.ip_address(text.split("%", 1)[0])
                pairs.add((str(ip), port))
                if is_internal(ip):
                    ports.add(port)
        return pairs, ports

    async def _lookup(self, host: str, port: int) -> list[str]:
        return await (self.resolver or system_resolver)(host, port)
