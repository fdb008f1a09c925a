"""Egress for sealed sandboxes: the allowlist, and the proxy the worker runs for one step.

A sealed step with an `egressAllowlist` lives in its own network namespace, where the only
interface is its own loopback: it cannot reach anything by itself. The worker listens on a unix
socket in the step's private scratch folder; bubblewrap binds that socket into the sandbox, and a
small forwarder (`forwarder.py`) inside the sandbox accepts TCP on the sandbox's
`127.0.0.1:3128` and relays each connection to the socket. `HTTP_PROXY`/`HTTPS_PROXY` (both
cases) and `ALL_PROXY` point there, so curl, pip, git over https, Python's urllib, requests,
httpx, Node and Go all use it. Why a unix socket rather than a port on the host: a socket file
crosses the network-namespace wall without giving the sandbox a route anywhere, and only the
one sandbox that has it bound can connect.

The proxy speaks HTTP/1.1 `CONNECT host:port` (TLS and any other TCP protocol tunnelled) and
absolute-form requests (`GET http://host:port/path`, plain HTTP). It checks each target against
the allowlist and the operator's target policy (`activities/netpolicy.py`: no internal
addresses unless allowed, never the Temporal frontend) before it connects, resolves names itself
(the sandbox has no DNS) and connects to the address it checked, answers `403` to anything else
and records the refusal: the step's stderr gets a line naming each target refused, and a step
that then fails is reported as `egress-denied`.

Allowlist entries: an exact host (`api.example.com`, `10.0.0.5`), a host with a port
(`api.example.com:8443`, `[::1]:8080`), or a wildcard (`*.example.com`: any subdomain, not
`example.com` itself). A host without a port allows any port.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from activities.netpolicy import TargetPolicy, TargetRefused

MAX_HEAD_BYTES = 64 * 1024
CONNECT_TIMEOUT_SECONDS = 10.0
_DEFAULT_PORTS = {"http": 80, "https": 443}


def split_entry(entry: str) -> tuple[str, int | None]:
    """An allowlist entry as (host pattern, port or None)."""
    text = entry.strip().lower()
    port: str | None = None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host = text
    return host.rstrip("."), int(port) if port and port.isdigit() else None


def host_allowed(host: str, port: int | None, allowlist: Iterable[str]) -> bool:
    """Whether `host:port` matches an entry of `allowlist`."""
    host = host.lower().rstrip(".").strip("[]")
    for entry in allowlist:
        pattern, entry_port = split_entry(entry)
        if entry_port is not None and entry_port != port:
            continue
        if host == pattern:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
            return True
    return False


@dataclass
class EgressProxy:
    """An allowlisting HTTP proxy on a unix socket, for one step. Use `async with`."""

    socket_path: Path
    allowlist: tuple[str, ...]
    policy: TargetPolicy = field(default_factory=TargetPolicy)
    denied: list[str] = field(default_factory=list)
    """Each refusal as `host:port (why)`, in order."""
    allowed: list[str] = field(default_factory=list)
    _server: asyncio.AbstractServer | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def __aenter__(self) -> EgressProxy:
        self._server = await asyncio.start_unix_server(self._handle, path=str(self.socket_path))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(list(self._tasks))
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        with contextlib.suppress(OSError):
            self.socket_path.unlink()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEAD_BYTES:
            return await _answer(writer, 431, "Request Header Fields Too Large")
        line, _, rest = head.partition(b"\r\n")
        parts = line.decode("latin-1").split(" ")
        if len(parts) != 3:
            return await _answer(writer, 400, "Bad Request")
        method, target, version = parts
        if method.upper() == "CONNECT":
            host, port = _host_port(target, None)
            first = b""
        else:
            scheme, sep, remainder = target.partition("://")
            if not sep or scheme.lower() != "http":
                return await _answer(writer, 400, "Bad Request")
            authority, slash, path = remainder.partition("/")
            host, port = _host_port(authority, 80)
            first = f"{method} /{path if slash else ''} {version}\r\n".encode("latin-1") + rest
        if not host or port is None:
            return await _answer(writer, 400, "Bad Request")
        label = f"{host}:{port}"
        if not host_allowed(host, port, self.allowlist):
            self.denied.append(f"{label} (not in sandbox.egressAllowlist)")
            return await _answer(writer, 403, "Forbidden: not in sandbox.egressAllowlist")
        try:
            addresses = await self.policy.resolve(host, port)
        except TargetRefused as exc:
            self.denied.append(f"{label} ({exc})")
            return await _answer(writer, 403, "Forbidden: refused by the operator's policy")
        try:
            # To the address just checked, not the name: it cannot resolve elsewhere now.
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(addresses[0], port), CONNECT_TIMEOUT_SECONDS
            )
        except (OSError, TimeoutError):
            return await _answer(writer, 502, "Bad Gateway")
        self.allowed.append(label)
        try:
            if first:
                up_writer.write(first)
            else:
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()


def _host_port(authority: str, default: int | None) -> tuple[str, int | None]:
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = authority.rpartition(":") if ":" in authority else (authority, "", "")
    if not port_text:
        return host, default
    return (host, int(port_text)) if port_text.isdigit() else ("", None)


async def _answer(writer: asyncio.StreamWriter, status: int, text: str) -> None:
    writer.write(
        f"HTTP/1.1 {status} {text}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
    )
    await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        pass
