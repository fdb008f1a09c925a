"""TaskRunner's processes reach a Temporal frontend that demands a client certificate (mTLS),
configured the way every Temporal client is (`TEMPORAL_TLS_*`, read by temporalio.envconfig).

The dev server speaks plain gRPC, so the frontend here is a TLS terminator in front of it that
requires a certificate signed by the test's CA, as a frontend with `requireClientAuth: true`
does: whoever holds no such certificate gets nothing through, and TaskRunner, given one, works.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from tests.api.support import serve
from workflows.contract.settings import SharedSettings, connect


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # signed by another CA
    stranger_key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _issue(
    subject: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    server: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name, issuer_key = issuer or (_name(subject), key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    elif server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False
        )
    return builder.sign(issuer_key, hashes.SHA256()), key


def _write(
    folder: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, ca_key = _issue("test-ca", None)
    other_ca, other_key = _issue("another-ca", None)
    _write(folder, "ca", ca, ca_key)
    _write(folder, "server", *_issue("localhost", (ca.subject, ca_key), server=True))
    _write(folder, "client", *_issue("taskrunner", (ca.subject, ca_key)))
    _write(folder, "stranger", *_issue("taskrunner", (other_ca.subject, other_key)))
    return Pki(
        ca=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
        stranger_cert=folder / "stranger.pem",
        stranger_key=folder / "stranger.key",
    )


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@pytest.fixture
def mtls_frontend(pki: Pki, dev_env: WorkflowEnvironment) -> Iterator[str]:
    """host:port of a TLS listener requiring a client certificate of the test CA, in front of
    the dev server. On a loop of its own, in its own thread: the API under test starts (and
    connects) while the test's loop waits for it."""
    upstream_host, upstream_port = dev_env.client.service_client.config.target_host.rsplit(":", 1)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.load_verify_locations(pki.ca)
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["h2"])

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(upstream_host, int(upstream_port))
        except BaseException:
            writer.close()
            raise
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(
        asyncio.start_server(relay, "127.0.0.1", 0, ssl=context), loop
    ).result(10)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:

        async def shut_down() -> None:
            server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.wait_closed()
            # A closed transport lets go of its socket in a callback of the next loop turns:
            # run them before the loop stops, or the socket is only found unclosed by the GC.
            await asyncio.sleep(0.1)

        asyncio.run_coroutine_threadsafe(shut_down(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _tls_env(
    monkeypatch: pytest.MonkeyPatch, pki: Pki, cert: Path | None, key: Path | None
) -> None:
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_CA_CERT_PATH", str(pki.ca))
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_NAME", "localhost")
    if cert is not None and key is not None:
        monkeypatch.setenv("TEMPORAL_TLS_CLIENT_CERT_PATH", str(cert))
        monkeypatch.setenv("TEMPORAL_TLS_CLIENT_KEY_PATH", str(key))


def _settings(address: str, dev_env: WorkflowEnvironment) -> SharedSettings:
    return SharedSettings(temporal_address=address, temporal_namespace=dev_env.client.namespace)


class TestMutualTls:
    async def test_taskrunner_with_its_certificate_gets_through(
        self,
        mtls_frontend: str,
        pki: Pki,
        dev_env: WorkflowEnvironment,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        _tls_env(monkeypatch, pki, pki.client_cert, pki.client_key)
        client = await asyncio.wait_for(connect(_settings(mtls_frontend, dev_env)), 30)
        count = await client.count_workflows()
        assert count.count >= 0

    async def test_without_a_certificate_of_the_ca_nothing_gets_through(
        self,
        mtls_frontend: str,
        pki: Pki,
        dev_env: WorkflowEnvironment,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        for cert, key in ((None, None), (pki.stranger_cert, pki.stranger_key)):
            with monkeypatch.context() as patch:
                _tls_env(patch, pki, cert, key)
                with pytest.raises(RuntimeError):
                    await asyncio.wait_for(connect(_settings(mtls_frontend, dev_env)), 30)
        # Plain gRPC to the TLS frontend does not get through either.
        with pytest.raises(RuntimeError):
            await asyncio.wait_for(connect(_settings(mtls_frontend, dev_env)), 30)

    async def test_the_api_is_ready_only_with_the_certificate(
        self,
        mtls_frontend: str,
        pki: Pki,
        dev_env: WorkflowEnvironment,
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
    ) -> None:
        from api.settings import ApiSettings

        settings = ApiSettings(
            temporal_address=mtls_frontend,
            temporal_namespace=dev_env.client.namespace,
            data_dir=tmp_path,
            auth_enabled=False,
        )
        with monkeypatch.context() as patch:
            _tls_env(patch, pki, None, None)
            with serve(create_app(settings)) as url:
                async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                    response = await http.get("/readyz")
                    assert response.status_code == 503
        _tls_env(monkeypatch, pki, pki.client_cert, pki.client_key)
        with serve(create_app(settings)) as url:
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                response = await http.get("/readyz")
                assert response.status_code == 200, response.text
