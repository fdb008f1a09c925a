"""`builtin:http`: one HTTP request, honouring the sandbox's egress allowlist.

    with:
      method: POST                      # default GET
      url: https://api.example.com/v1/items
      headers: {Authorization: "Bearer {{ secrets.TOKEN }}"}
      json: {name: widget}              # or body: "raw text" (not both)
      expectStatus: [200, 201]          # an int or a list; default any 2xx
      timeoutSeconds: 30                # default 30, capped by the step's own timeout
      followRedirects: false

Outputs: `status`; `headers` (lower-case names, repeated headers joined with ", "); `body`, the
response text cut to 64 KiB characters, with `bodyTruncated`; and `json`, the parsed body, when
the whole body is JSON and no longer than that. A longer body is stored as the artifact
`<stepId>.body` (at most 16 MiB is read).

When the sandbox is sealed, a request may only go to a host in `sandbox.egressAllowlist`, and
only to an address the operator's target policy allows (no loopback, link-local or private
address unless `TASKRUNNER_SANDBOX_EGRESS_ALLOW_INTERNAL`; never the Temporal frontend). An
entry is an exact host (`api.example.com`, `10.0.0.5`), a host with a port
(`api.example.com:8443`), or a wildcard (`*.example.com`: any subdomain, not `example.com`
itself). Every request is checked before it connects, redirects included, and connects to the
very address it was checked at (the name is resolved once, by the policy; the request keeps its
Host header and TLS server name, so certificates are still checked against the name): a name
that answers differently a moment later (DNS rebinding) cannot move the connection. Proxy
settings in the worker's environment are ignored, so a proxy cannot become a way around the
allowlist.

An unexpected status, a refused host, a bad URL or a bad `with` fail the step permanently.
Connection errors and timeouts are raised as they are: they may pass, so Temporal retries them.
"""

from __future__ import annotations

import contextlib
import json
import ssl
from typing import Any

import httpx
from pydantic import Field, model_validator

from activities.executor import ExecutorContext, Params, StepFailed, parse_params
from activities.netpolicy import TargetPolicy, TargetRefused
from activities.sandbox.egress import host_allowed
from compiler.plan import Sandbox
from workflows.contract.activities import EGRESS_DENIED

BODY_CHARS = 64 * 1024
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
DEFAULT_TIMEOUT_SECONDS = 30.0
_DEFAULT_PORTS = {"http": 80, "https": 443}


class HttpParams(Params):
    method: str = "GET"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    json_: Any = Field(default=None, alias="json")
    expectStatus: int | list[int] | None = None
    timeoutSeconds: float = Field(default=DEFAULT_TIMEOUT_SECONDS, gt=0)
    followRedirects: bool = False

    @model_validator(mode="after")
    def _one_body(self) -> HttpParams:
        if self.body is not None and "json_" in self.model_fields_set:
            raise ValueError("give at most one of `body` and `json`")
        return self


class EgressRefused(StepFailed):
    """A request to a host the sealed sandbox does not allow (status reason `egress-denied`)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason=EGRESS_DENIED)


class PinnedTransport(httpx.AsyncBaseTransport):
    """The sealed sandbox's way out for `builtin:http`: each request is checked against the
    allowlist and the operator's target policy, then sent to the address the policy resolved
    and checked, never to a second lookup of the name. The Host header stays the original's
    (httpx set it from the URL) and the TLS server name is the name (httpx's `sni_hostname`
    extension), so virtual hosts and certificate checks work as for the name.

    One connection pool per original origin: a TLS connection made for one name is never reused
    for another name that happens to share its address. `verify`: the CAs a server's certificate
    is checked against (the system's by default).
    """

    def __init__(
        self,
        sandbox: Sandbox,
        policy: TargetPolicy,
        uses: str,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.sandbox = sandbox
        self.policy = policy
        self.uses = uses
        self.verify = verify
        self._pools: dict[tuple[str, str, int], httpx.AsyncHTTPTransport] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if not egress_allowed(url, self.sandbox):
            raise EgressRefused(
                f"{self.uses}: egress-denied: egress to {url.host!r} refused: the "
                "sandbox is sealed and the host is not in sandbox.egressAllowlist"
            )
        port = url.port or _DEFAULT_PORTS[url.scheme]
        try:
            # An allowlist entry is the pack author's word: it must not point the worker at
            # its own network (metadata service, Temporal) either.
            addresses = await self.policy.resolve(url.host, port)
        except TargetRefused as exc:
            raise EgressRefused(f"{self.uses}: egress-denied: {exc}") from None
        key = (url.scheme, url.host, port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = httpx.AsyncHTTPTransport(verify=self.verify, trust_env=False)
        pinned = httpx.Request(
            request.method,
            url.copy_with(host=addresses[0]),
            headers=request.headers,
            stream=request.stream,
            extensions={**request.extensions, "sni_hostname": url.host},
        )
        return await pool.handle_async_request(pinned)

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()


def egress_allowed(url: httpx.URL, sandbox: Sandbox) -> bool:
    """Whether the sandbox lets a request go to `url`'s host (always, when it is open)."""
    if sandbox.mode == "open":
        return True
    port = url.port or _DEFAULT_PORTS.get(url.scheme)
    return host_allowed(url.host, port, sandbox.egressAllowlist)


async def http(params: dict[str, Any], ctx: ExecutorContext) -> dict[str, Any]:
    """`builtin:http`: see the module docstring for `with`, outputs and the allowlist."""
    args = parse_params(HttpParams, params, ctx.uses)
    method = args.method.upper()
    try:
        url = httpx.URL(args.url)
    except httpx.InvalidURL as exc:
        raise StepFailed(f"{ctx.uses}: invalid url: {exc}") from None
    if url.scheme not in _DEFAULT_PORTS or not url.host:
        raise StepFailed(f"{ctx.uses}: url must be an absolute http or https URL")

    transport: httpx.AsyncBaseTransport | None = None
    if ctx.sandbox.mode == "sealed":
        transport = PinnedTransport(ctx.sandbox, ctx.commands.settings.egress, ctx.uses)
    timeout = min(args.timeoutSeconds, ctx.timeout_seconds)
    try:
        async with (
            httpx.AsyncClient(
                trust_env=False,
                timeout=httpx.Timeout(timeout),
                follow_redirects=args.followRedirects,
                transport=transport,
            ) as client,
            client.stream(
                method,
                url,
                headers=args.headers,
                content=args.body.encode() if args.body is not None else None,
                json=args.json_ if "json_" in args.model_fields_set else None,
            ) as response,
        ):
            data, cut = await _read_capped(response)
            outputs = _outputs(response, data, cut, ctx)
    except StepFailed:
        raise
    except httpx.UnsupportedProtocol as exc:
        raise StepFailed(f"{ctx.uses}: {exc}") from None
    except httpx.TransportError:
        raise
    except httpx.HTTPError as exc:
        # Redirect loops, undecodable bodies, malformed responses: the same request would
        # meet the same problem again.
        raise StepFailed(f"{ctx.uses}: {type(exc).__name__}: {exc}") from None

    if not _status_expected(response.status_code, args.expectStatus):
        expected = args.expectStatus if args.expectStatus is not None else "2xx"
        raise StepFailed(
            f"{ctx.uses}: {method} {url.host} answered {response.status_code}, expected {expected}",
            outputs,
        )
    return outputs


async def _read_capped(response: httpx.Response) -> tuple[bytes, bool]:
    data = bytearray()
    async for chunk in response.aiter_bytes():
        room = MAX_RESPONSE_BYTES - len(data)
        data += chunk[:room]
        if len(chunk) > room:
            return bytes(data), True
    return bytes(data), False


def _outputs(
    response: httpx.Response, data: bytes, cut: bool, ctx: ExecutorContext
) -> dict[str, Any]:
    headers: dict[str, str] = {}
    for name, value in response.headers.multi_items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    try:
        text = data.decode(response.encoding or "utf-8", "replace")
    except LookupError:
        text = data.decode("utf-8", "replace")
    truncated = cut or len(text) > BODY_CHARS
    outputs: dict[str, Any] = {
        "status": response.status_code,
        "headers": headers,
        "body": text[:BODY_CHARS],
        "bodyTruncated": truncated,
    }
    if truncated:
        ctx.write_artifact(f"{ctx.step_id}.body", text)
    elif text.strip():
        with contextlib.suppress(ValueError):
            outputs["json"] = json.loads(text)
    return outputs


def _status_expected(status: int, expect: int | list[int] | None) -> bool:
    if expect is None:
        return 200 <= status < 300
    if isinstance(expect, int):
        return status == expect
    return status in expect
