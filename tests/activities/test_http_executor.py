"""`builtin:http` against a real server on 127.0.0.1: requests, outputs, the egress allowlist."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from activities.builtins.http import (
    BODY_CHARS,
    EgressRefused,
    PinnedTransport,
    egress_allowed,
    http,
)
from activities.executor import StepFailed
from activities.netpolicy import TargetPolicy, system_resolver
from activities.sandbox.runner import CommandRunner, SandboxSettings
from compiler.plan import Sandbox
from tests.activities.conftest import Recorder, _Handler

OPEN = Sandbox(mode="open")


# The test server is on loopback: the operator's opt-in to internal targets.
INTERNAL_ALLOWED = CommandRunner(SandboxSettings(egress=TargetPolicy(allow_internal=True)))


def ctx_for(make_ctx: Any, sandbox: Sandbox = OPEN, **kwargs: Any) -> Any:
    kwargs.setdefault("runner", INTERNAL_ALLOWED)
    return make_ctx(uses="builtin:http", step_id="call", sandbox=sandbox, **kwargs)


async def test_sealed_refuses_internal_addresses_unless_the_operator_allows(
    make_ctx: Any, http_server: Any
) -> None:
    sealed = Sandbox(mode="sealed", egressAllowlist=("127.0.0.1", "169.254.169.254"))
    strict = CommandRunner(SandboxSettings())
    with pytest.raises(EgressRefused, match=r"egress-denied: .*internal address"):
        await http({"url": f"{http_server.base}/json"}, ctx_for(make_ctx, sealed, runner=strict))
    with pytest.raises(EgressRefused, match="internal address"):
        await http(
            {"url": "http://169.254.169.254/latest/meta-data/"},
            ctx_for(make_ctx, sealed, runner=strict),
        )
    assert http_server.recorder.requests == []


async def test_get_json(make_ctx: Any, http_server: Any) -> None:
    outputs = await http({"url": f"{http_server.base}/json"}, ctx_for(make_ctx))
    assert outputs["status"] == 200
    assert outputs["json"] == {"hello": "world", "n": 1}
    assert outputs["body"] == '{"hello": "world", "n": 1}'
    assert outputs["bodyTruncated"] is False
    assert outputs["headers"]["content-type"] == "application/json"
    assert outputs["headers"]["x-multi"] == "a, b"


async def test_text_body_has_no_json(make_ctx: Any, http_server: Any) -> None:
    outputs = await http({"url": f"{http_server.base}/text"}, ctx_for(make_ctx))
    assert outputs["body"] == "plain text"
    assert "json" not in outputs


async def test_post_json_with_headers(make_ctx: Any, http_server: Any) -> None:
    params = {
        "method": "post",
        "url": f"{http_server.base}/echo",
        "headers": {"X-Token": "abc"},
        "json": {"a": [1, 2]},
    }
    outputs = await http(params, ctx_for(make_ctx))
    echoed = outputs["json"]
    assert echoed["method"] == "POST"
    assert echoed["headers"]["X-Token"] == "abc"
    assert echoed["headers"]["Content-Type"] == "application/json"
    assert json.loads(echoed["body"]) == {"a": [1, 2]}


async def test_put_text_body(make_ctx: Any, http_server: Any) -> None:
    params = {"method": "PUT", "url": f"{http_server.base}/echo", "body": "raw"}
    outputs = await http(params, ctx_for(make_ctx))
    assert outputs["json"]["body"] == "raw"


async def test_unexpected_status_fails_permanently_with_outputs(
    make_ctx: Any, http_server: Any
) -> None:
    with pytest.raises(StepFailed, match="answered 404, expected 2xx") as caught:
        await http({"url": f"{http_server.base}/status/404"}, ctx_for(make_ctx))
    assert caught.value.outputs["status"] == 404
    assert caught.value.outputs["body"] == "status body"


@pytest.mark.parametrize("expect", [404, [200, 404]])
async def test_expect_status(make_ctx: Any, http_server: Any, expect: Any) -> None:
    params = {"url": f"{http_server.base}/status/404", "expectStatus": expect}
    assert (await http(params, ctx_for(make_ctx)))["status"] == 404


async def test_long_body_truncated_and_stored_as_artifact(
    make_ctx: Any, http_server: Any, store: Any
) -> None:
    ctx = ctx_for(make_ctx)
    outputs = await http({"url": f"{http_server.base}/big"}, ctx)
    assert outputs["bodyTruncated"] is True
    assert len(outputs["body"]) == BODY_CHARS
    [record] = ctx.artifacts
    assert record.name == "call.body"
    assert len((store.root / record.storedPath).read_text()) == 100_000


async def test_sealed_sandbox_refuses_unlisted_host_before_connecting(
    make_ctx: Any, http_server: Any
) -> None:
    sealed = Sandbox(mode="sealed", egressAllowlist=("api.example.com",))
    with pytest.raises(EgressRefused, match=r"'127\.0\.0\.1' refused.*egressAllowlist"):
        await http({"url": f"{http_server.base}/json"}, ctx_for(make_ctx, sealed))
    assert http_server.recorder.requests == []


@pytest.mark.parametrize("entry", ["127.0.0.1", "127.0.0.1:{port}"])
async def test_sealed_sandbox_allows_listed_host(
    make_ctx: Any, http_server: Any, entry: str
) -> None:
    sealed = Sandbox(mode="sealed", egressAllowlist=(entry.format(port=http_server.port),))
    outputs = await http({"url": f"{http_server.base}/json"}, ctx_for(make_ctx, sealed))
    assert outputs["status"] == 200


async def test_sealed_sandbox_checks_the_port_when_listed(make_ctx: Any, http_server: Any) -> None:
    sealed = Sandbox(mode="sealed", egressAllowlist=(f"127.0.0.1:{http_server.port + 1}",))
    with pytest.raises(EgressRefused):
        await http({"url": f"{http_server.base}/json"}, ctx_for(make_ctx, sealed))


async def test_sealed_sandbox_checks_redirects(make_ctx: Any, http_server: Any) -> None:
    sealed = Sandbox(mode="sealed", egressAllowlist=("127.0.0.1",))
    params = {
        "url": f"{http_server.base}/redirect?to=http://blocked.invalid/x",
        "followRedirects": True,
    }
    with pytest.raises(EgressRefused, match=r"blocked\.invalid"):
        await http(params, ctx_for(make_ctx, sealed))
    assert [r["path"] for r in http_server.recorder.requests] == ["/redirect"]


async def test_redirect_within_allowlist_is_followed(make_ctx: Any, http_server: Any) -> None:
    sealed = Sandbox(mode="sealed", egressAllowlist=("127.0.0.1",))
    params = {
        "url": f"{http_server.base}/redirect?to={http_server.base}/json",
        "followRedirects": True,
    }
    assert (await http(params, ctx_for(make_ctx, sealed)))["json"]["hello"] == "world"


async def test_redirect_not_followed_by_default(make_ctx: Any, http_server: Any) -> None:
    params = {"url": f"{http_server.base}/redirect?to=/json", "expectStatus": 302}
    outputs = await http(params, ctx_for(make_ctx))
    assert outputs["headers"]["location"] == "/json"


@pytest.mark.parametrize(
    ("url", "allowlist", "allowed"),
    [
        ("https://api.example.com/x", ["api.example.com"], True),
        ("https://API.Example.com./x", ["api.example.com"], True),
        ("https://a.example.com/x", ["*.example.com"], True),
        ("https://a.b.example.com/x", ["*.example.com"], True),
        ("https://example.com/x", ["*.example.com"], False),
        ("https://badexample.com/x", ["*.example.com"], False),
        ("https://example.com.evil.net/x", ["example.com"], False),
        ("https://api.example.com/x", ["api.example.com:443"], True),
        ("http://api.example.com/x", ["api.example.com:443"], False),
        ("http://api.example.com:8080/x", ["api.example.com:8080"], True),
        ("http://[::1]:8080/x", ["[::1]:8080"], True),
        ("https://api.example.com/x", [], False),
    ],
)
def test_egress_allowlist_matching(url: str, allowlist: list[str], allowed: bool) -> None:
    sandbox = Sandbox(mode="sealed", egressAllowlist=tuple(allowlist))
    assert egress_allowed(httpx.URL(url), sandbox) is allowed
    assert egress_allowed(httpx.URL(url), Sandbox(mode="open")) is True


async def test_connection_refused_is_transient(make_ctx: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Not a StepFailed: the activity lets Temporal retry it.
    with pytest.raises(httpx.ConnectError):
        await http({"url": f"http://127.0.0.1:{port}/"}, ctx_for(make_ctx))


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"url": "ftp://127.0.0.1/x"}, "absolute http or https URL"),
        ({"url": "/relative"}, "absolute http or https URL"),
        ({"url": "http://127.0.0.1/", "body": "a", "json": {}}, "at most one of"),
        ({"url": "http://127.0.0.1/", "timeoutSeconds": 0}, "with.timeoutSeconds"),
        ({}, "with.url: Field required"),
    ],
)
async def test_bad_with_is_refused(make_ctx: Any, params: dict[str, Any], problem: str) -> None:
    with pytest.raises(StepFailed, match=problem):
        await http(params, ctx_for(make_ctx))


class Rebinding:
    """A name whose first answer is the checked server and every later answer another one: a
    rebinding DNS server's trick, played by a resolver the policy is given."""

    def __init__(self, name: str, first: str, later: str) -> None:
        self.name, self.first, self.later = name, first, later
        self.lookups = 0

    async def __call__(self, host: str, port: int) -> list[str]:
        if host != self.name:
            return await system_resolver(host, port)
        self.lookups += 1
        return [self.first if self.lookups == 1 else self.later]


async def test_the_connection_goes_to_the_address_that_was_checked(
    make_ctx: Any, http_server: Any
) -> None:
    # A second server on the same port of another loopback address: where a second lookup of
    # the name would go.
    other = Recorder()
    handler = type("Other", (_Handler,), {"recorder": other})
    decoy = ThreadingHTTPServer(("127.0.0.2", http_server.port), handler)
    threading.Thread(target=decoy.serve_forever, args=(0.05,), daemon=True).start()
    try:
        name = Rebinding("svc.rebind.test", "127.0.0.1", "127.0.0.2")
        runner = CommandRunner(
            SandboxSettings(egress=TargetPolicy(allow_internal=True, resolver=name))
        )
        sealed = Sandbox(mode="sealed", egressAllowlist=("svc.rebind.test",))
        url = f"http://svc.rebind.test:{http_server.port}/json"
        outputs = await http({"url": url}, ctx_for(make_ctx, sealed, runner=runner))
    finally:
        decoy.shutdown()
        decoy.server_close()
    assert outputs["json"] == {"hello": "world", "n": 1}
    assert name.lookups == 1  # looked up once, by the policy: nothing resolved it again
    [seen] = http_server.recorder.requests
    assert seen["headers"]["Host"] == f"svc.rebind.test:{http_server.port}"
    assert other.requests == []


async def test_a_name_that_turns_internal_is_refused_before_connecting(
    make_ctx: Any, http_server: Any
) -> None:
    # The policy sees the answer the connection would use: an internal one is refused.
    name = Rebinding("svc.rebind.test", "127.0.0.1", "127.0.0.1")
    runner = CommandRunner(SandboxSettings(egress=TargetPolicy(resolver=name)))
    sealed = Sandbox(mode="sealed", egressAllowlist=("svc.rebind.test",))
    url = f"http://svc.rebind.test:{http_server.port}/json"
    with pytest.raises(EgressRefused, match="internal address") as refused:
        await http({"url": url}, ctx_for(make_ctx, sealed, runner=runner))
    assert refused.value.reason == "egress-denied"
    assert http_server.recorder.requests == []


def tls_files(folder: Path, name: str) -> tuple[Path, Path, str]:
    """A CA, and a server certificate it signed for `name`: (cert file, key file, CA PEM)."""
    now = datetime.now(UTC)

    def cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: Any, ca: bool):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = cert("test CA", ca_key, "test CA", ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = cert(name, key, "test CA", ca_key, False)
    (folder / "cert.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return (
        folder / "cert.pem",
        folder / "key.pem",
        ca.public_bytes(serialization.Encoding.PEM).decode(),
    )


async def test_https_to_a_pinned_address_keeps_the_name_for_sni_and_the_certificate(
    tmp_path: Path,
) -> None:
    certfile, keyfile, ca = tls_files(tmp_path, "svc.rebind.test")
    server_names: list[str | None] = []
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(certfile, keyfile)
    server_tls.sni_callback = lambda _sock, name, _ctx: server_names.append(name)  # type: ignore[assignment]
    recorder = Recorder()
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_Handler,), {"recorder": recorder}))
    server.socket = server_tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    port = server.server_address[1]
    name = Rebinding("svc.rebind.test", "127.0.0.1", "127.0.0.2")
    transport = PinnedTransport(
        Sandbox(mode="sealed", egressAllowlist=("svc.rebind.test",)),
        TargetPolicy(allow_internal=True, resolver=name),
        "builtin:http",
        verify=ssl.create_default_context(cadata=ca),
    )
    try:
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get(f"https://svc.rebind.test:{port}/json")
    finally:
        server.shutdown()
        server.server_close()
    assert response.json() == {"hello": "world", "n": 1}
    assert server_names == ["svc.rebind.test"]  # SNI is the name, not the address
    assert recorder.requests[0]["headers"]["Host"] == f"svc.rebind.test:{port}"
    assert name.lookups == 1
