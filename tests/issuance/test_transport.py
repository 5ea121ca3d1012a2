"""The upstream transport: kept-alive connections reused, ones the server closed never reused."""

import asyncio
import ipaddress
import socket
import ssl
from datetime import UTC, datetime, timedelta

import httpx2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from apps.issuance.gateway import UPSTREAM_LIMITS
from apps.issuance.transport import UpstreamTransport, socket_readable

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class TinyServer:
    """An HTTP/1.1 server that answers every GET on a connection with ``ok``, or only the
    first one and then hangs up (``hang_up_after_first``), as a server's idle timer does."""

    def __init__(self, hang_up_after_first: bool, tls: ssl.SSLContext | None = None):
        self.hang_up_after_first = hang_up_after_first
        self.tls = tls
        self.connections = 0
        self.hung_up = asyncio.Event()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0, ssl=self.tls)
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"{'https' if self.tls else 'http'}://{host}:{port}/"

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def serve(self, reader, writer) -> None:
        self.connections += 1
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(RESPONSE)
                await writer.drain()
                if self.hang_up_after_first:
                    break
        except asyncio.IncompleteReadError:
            pass
        writer.close()
        await writer.wait_closed()
        self.hung_up.set()


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a self-signed certificate for 127.0.0.1, and a client context
    that trusts it: Google is reached over TLS, so the pool's check must work through it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return server, ssl.create_default_context(cafile=str(folder / "cert.pem"))


@pytest.fixture(params=["http", "https"])
def channel(request, tls_pair) -> dict:
    """Each test over plain HTTP and over TLS, as Google is reached."""
    if request.param == "http":
        return {"server": None, "verify": True}
    return {"server": tls_pair[0], "verify": tls_pair[1]}


@pytest.mark.asyncio
async def test_a_kept_alive_connection_is_reused(channel):
    transport = UpstreamTransport(UPSTREAM_LIMITS, verify=channel["verify"])
    async with (
        TinyServer(hang_up_after_first=False, tls=channel["server"]) as url,
        httpx2.AsyncClient(transport=transport) as client,
    ):
        for _ in range(3):
            assert (await client.get(url)).text == "ok"
    assert transport.network.connections_opened == 1


@pytest.mark.asyncio
async def test_a_connection_the_server_closed_is_not_reused():
    """Over plain TCP. Over TLS neither this check nor httpcore's own can see a server's
    close_notify once asyncio has read it off the socket (measured: the stock transport
    reuses such a connection too); the gateway sends a request that meets one again."""
    server = TinyServer(hang_up_after_first=True)
    transport = UpstreamTransport(UPSTREAM_LIMITS)
    async with server as url, httpx2.AsyncClient(transport=transport) as client:
        assert (await client.get(url)).text == "ok"
        await server.hung_up.wait()
        # Reusing the closed connection would fail with "server disconnected": the pool's
        # liveness check must see the hang-up and open a new one instead.
        assert (await client.get(url)).text == "ok"
    assert transport.network.connections_opened == server.connections == 2


def test_socket_readable_means_data_or_hang_up():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert not socket_readable(ours)
        theirs.sendall(b"x")
        assert socket_readable(ours)
        ours.recv(1)
        assert not socket_readable(ours)
        theirs.close()
        assert socket_readable(ours)
    assert socket_readable(ours)  # closed on our side too: treated as gone
    assert socket_readable(None)
