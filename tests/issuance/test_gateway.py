"""The gateway's one retry: a connection that drops before Google answers is tried once more."""

import asyncio
import socket
import struct
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from google.genai import types

from apps.issuance import gateway

pytestmark = pytest.mark.asyncio


class DroppingProxy:
    """A TCP proxy to the sandbox that resets its first ``drops`` connections once the request
    has arrived, as a server does that closed a kept-alive connection as it was reused."""

    def __init__(self, upstream_url: str, drops: int):
        parts = urlsplit(upstream_url)
        self.upstream = (parts.hostname, parts.port)
        self.drops = drops
        self.connections = 0

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def serve(self, reader, writer) -> None:
        self.connections += 1
        if self.connections <= self.drops:
            await reader.read(65536)
            linger_zero = struct.pack("ii", 1, 0)  # close with a reset, not a goodbye
            writer.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, linger_zero
            )
            writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        await asyncio.gather(self.pipe(reader, upstream_writer), self.pipe(upstream_reader, writer))

    @staticmethod
    async def pipe(reader, writer) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


def a_token_config() -> types.CreateAuthTokenConfig:
    now = datetime.now(UTC)
    return types.CreateAuthTokenConfig(
        uses=1,
        expire_time=now + timedelta(minutes=30),
        new_session_expire_time=now + timedelta(minutes=1),
    )


async def test_a_connection_dropped_once_is_retried_and_the_token_issued(sandbox, settings):
    async with DroppingProxy(sandbox.url, drops=1) as proxy_url:
        settings.GEMINI_BASE_URL = proxy_url
        minted = await gateway.mint_token(api_key="sandbox-key", config=a_token_config())
    assert minted.name.startswith("auth_tokens/sandbox-")
    assert len(sandbox.state.received) == 1  # the dropped request never reached it


async def test_a_connection_dropped_twice_is_upstream_unavailable(sandbox, settings):
    proxy = DroppingProxy(sandbox.url, drops=2)
    async with proxy as proxy_url:
        settings.GEMINI_BASE_URL = proxy_url
        with pytest.raises(gateway.UpstreamError) as raised:
            await gateway.mint_token(api_key="sandbox-key", config=a_token_config())
    assert (raised.value.code, raised.value.http_status) == ("upstream_unavailable", 503)
    assert raised.value.retry_after == 5
    assert proxy.connections == 2  # one retry, no more
    assert not sandbox.state.received
