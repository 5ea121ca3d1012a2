"""The HTTP transport under the Gemini gateway: httpx2's pool with a cheap liveness check.

Every time a request starts or finishes, httpcore's pool asks each of its idle connections
whether the server has closed it ("is the socket readable?"). anyio answers that by rebuilding
the stream's whole attribute table, a ``getpeername`` system call included, per connection
per question, which dominates with a few hundred kept-alive connections to Google
(docs/adr/0005-upstream-transport.md). Here the stream
keeps its socket from the start and answers with one ``poll``; everything else is httpcore's.
"""

import select
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore2
import httpx2


def socket_readable(sock: socket.socket | None) -> bool:
    """True if a read would not block: data, or the end of a connection the peer closed.

    A socket that no longer exists counts as readable, as in httpcore: the next read on it
    returns the end of the stream, so the pool drops the connection instead of reusing it.
    """
    if sock is None or sock.fileno() < 0:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class _PooledStream(httpcore2.AsyncNetworkStream):
    """anyio's stream, with the socket looked up once instead of on every liveness check."""

    def __init__(self, stream: httpcore2.AsyncNetworkStream):
        self._stream = stream
        self._socket = stream.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        # The TLS stream wraps the same socket, and the check looks at that socket, as
        # httpcore's does (so, like it, it misses a close_notify asyncio has already read).
        tls = await self._stream.start_tls(ssl_context, server_hostname, timeout)
        return _PooledStream(tls)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return socket_readable(self._socket)
        return self._stream.get_extra_info(info)


class PooledNetwork(httpcore2.AsyncNetworkBackend):
    """anyio's network backend, handing out ``_PooledStream``s."""

    def __init__(self):
        self._anyio = httpcore2.AnyIOBackend()
        self.connections_opened = 0

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        stream = await self._anyio.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        self.connections_opened += 1
        return _PooledStream(stream)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.AsyncNetworkStream:
        stream = await self._anyio.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )
        self.connections_opened += 1
        return _PooledStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._anyio.sleep(seconds)


class UpstreamTransport(httpx2.AsyncHTTPTransport):
    """httpx2's own transport (its error mapping, streams and limits), on ``PooledNetwork``."""

    def __init__(self, limits: httpx2.Limits, verify: ssl.SSLContext | bool = True):
        super().__init__(limits=limits, verify=verify)
        self.network = PooledNetwork()
        # httpx2 offers no way to pass a network backend: build the pool it would, with ours,
        # in its private ``_pool`` (uv.lock pins httpx2; docs/adr/0005-upstream-transport.md).
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=httpx2.create_ssl_context(verify=verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=self.network,
        )
