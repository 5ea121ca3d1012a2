"""The upstream transport: kept-alive connections reused, ones the server closed never reused."""

import asyncio
import socket

import httpx2
import pytest

from apps.issuance.gateway import UPSTREAM_LIMITS
from apps.issuance.transport import UpstreamTransport, socket_readable

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class TinyServer:
    """An HTTP/1.1 server that answers every GET on a connection with ``ok``, or only the
    first one and then hangs up (``hang_up_after_first``), as a server's idle timer does."""

    def __init__(self, hang_up_after_first: bool):
        self.hang_up_after_first = hang_up_after_first
        self.connections = 0
        self.hung_up = asyncio.Event()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}/"

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


@pytest.mark.asyncio
async def test_a_kept_alive_connection_is_reused():
    transport = UpstreamTransport(UPSTREAM_LIMITS)
    async with (
        TinyServer(hang_up_after_first=False) as url,
        httpx2.AsyncClient(transport=transport) as client,
    ):
        for _ in range(3):
            assert (await client.get(url)).text == "ok"
    assert transport.network.connections_opened == 1


@pytest.mark.asyncio
async def test_a_connection_the_server_closed_is_not_reused():
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
