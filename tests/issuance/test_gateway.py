"""The gateway: its one retry of a dropped connection, one client build per key, Google's
"not now" answers as 503s with its Retry-After, and the sent body kept on every failure."""

import asyncio
import json
import re
import socket
import struct
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import urlsplit

import pytest
from google.genai import types

from apps.issuance import gateway
from apps.issuance.sandbox import Faults

pytestmark = pytest.mark.asyncio


class LoopbackServer:
    """A TCP server on a free loopback port for the length of an ``async with``, which
    gives its URL; subclasses answer each connection in ``serve``."""

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def serve(self, reader, writer) -> None:
        raise NotImplementedError


class DroppingProxy(LoopbackServer):
    """A TCP proxy to the sandbox that resets its first ``drops`` connections once the request
    has arrived, as a server does that closed a kept-alive connection as it was reused."""

    def __init__(self, upstream_url: str, drops: int):
        parts = urlsplit(upstream_url)
        self.upstream = (parts.hostname, parts.port)
        self.drops = drops
        self.connections = 0

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


@pytest.fixture
def counted_builds(monkeypatch, sandbox):
    """``_build_client`` counted, slowed down enough for requests to pile up behind it."""
    builds = {"count": 0, "fail": False}
    build = gateway._build_client

    def counted(api_key):
        builds["count"] += 1
        time.sleep(0.05)
        if builds["fail"]:
            raise RuntimeError("no client today")
        return build(api_key)

    monkeypatch.setattr(gateway, "_build_client", counted)
    return builds


async def test_requests_arriving_together_share_one_client_build(counted_builds):
    clients = await asyncio.gather(*(gateway.clients.get("sandbox-key") for _ in range(20)))
    assert counted_builds["count"] == 1
    assert all(client is clients[0] for client in clients)
    assert await gateway.clients.get("sandbox-key") is clients[0]
    assert counted_builds["count"] == 1


async def test_a_waiter_hanging_up_does_not_cancel_the_build(counted_builds):
    first = asyncio.ensure_future(gateway.clients.get("sandbox-key"))
    second = asyncio.ensure_future(gateway.clients.get("sandbox-key"))
    await asyncio.sleep(0.01)
    first.cancel()
    assert await second is not None
    assert first.cancelled()
    assert counted_builds["count"] == 1


async def test_a_failed_build_is_tried_again(counted_builds):
    counted_builds["fail"] = True
    with pytest.raises(RuntimeError):
        await gateway.clients.get("sandbox-key")
    counted_builds["fail"] = False
    assert await gateway.clients.get("sandbox-key") is not None
    assert counted_builds["count"] == 2


class AnsweringServer(LoopbackServer):
    """An upstream that answers every mint with one fixed raw HTTP response, as Google does
    when it sheds load (its status, headers and error body as given)."""

    def __init__(self, status: int, headers: dict[str, str], error: dict):
        body = json.dumps({"error": error}).encode()
        lines = [f"HTTP/1.1 {status} Unavailable", "Content-Type: application/json"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
        self.response = "\r\n".join(lines).encode() + body
        self.requests: list[bytes] = []

    async def serve(self, reader, writer) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        self.requests.append(await reader.readexactly(length))
        writer.write(self.response)
        await writer.drain()
        writer.close()


UNAVAILABLE = {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}
EXHAUSTED = {"code": 429, "message": "Quota exceeded.", "status": "RESOURCE_EXHAUSTED"}


def http_date(seconds_ahead: int) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds_ahead), usegmt=True)


@pytest.mark.parametrize(
    ("error", "headers", "retry_after"),
    [
        (UNAVAILABLE, {"Retry-After": "17"}, 17),
        (EXHAUSTED, {"Retry-After": "9"}, 9),
        (UNAVAILABLE, {"Retry-After": "86400"}, gateway.MAX_RETRY_AFTER),
        (UNAVAILABLE, {"Retry-After": "0"}, 1),
        (UNAVAILABLE, {"Retry-After": "soon"}, gateway.DEFAULT_RETRY_AFTER),
        (UNAVAILABLE, {}, gateway.DEFAULT_RETRY_AFTER),
        (
            {
                **EXHAUSTED,
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "21.4s"}
                ],
            },
            {},
            22,
        ),
    ],
    ids=["503-seconds", "429-seconds", "capped", "at-least-one", "unreadable", "none", "retryinfo"],
)
async def test_google_saying_not_now_is_upstream_unavailable_with_its_retry_after(
    sandbox, settings, error, headers, retry_after
):
    async with AnsweringServer(error["code"], headers, error) as upstream_url:
        settings.GEMINI_BASE_URL = upstream_url
        with pytest.raises(gateway.UpstreamError) as raised:
            await gateway.mint_token(api_key="sandbox-key", config=a_token_config())

    assert (raised.value.code, raised.value.http_status) == ("upstream_unavailable", 503)
    assert raised.value.retry_after == retry_after


async def test_an_http_date_retry_after_is_read_as_seconds_from_now(sandbox, settings):
    async with AnsweringServer(503, {"Retry-After": http_date(30)}, UNAVAILABLE) as url:
        settings.GEMINI_BASE_URL = url
        with pytest.raises(gateway.UpstreamError) as raised:
            await gateway.mint_token(api_key="sandbox-key", config=a_token_config())

    assert 25 <= raised.value.retry_after <= 30


async def test_other_server_errors_stay_upstream_errors_without_retry_after(sandbox, settings):
    internal = {"code": 500, "message": "Internal error.", "status": "INTERNAL"}
    async with AnsweringServer(500, {"Retry-After": "3"}, internal) as url:
        settings.GEMINI_BASE_URL = url
        with pytest.raises(gateway.UpstreamError) as raised:
            await gateway.mint_token(api_key="sandbox-key", config=a_token_config())

    assert (raised.value.code, raised.value.http_status) == ("upstream_error", 502)
    assert raised.value.retry_after is None


async def test_a_failed_mint_carries_the_body_google_received(sandbox, settings):
    sandbox.state.faults = Faults(status=503)
    sent: list = []

    with pytest.raises(gateway.UpstreamError) as raised:
        await gateway.mint_token(api_key="sandbox-key", config=a_token_config(), sent=sent)

    (received,) = sandbox.state.received
    assert raised.value.code == "upstream_unavailable"
    assert sent == [received["body"]]
    assert sent[-1]["uses"] == 1


async def test_a_connection_dropped_twice_carries_the_body_it_tried_to_send(sandbox, settings):
    sent: list = []
    async with DroppingProxy(sandbox.url, drops=2) as proxy_url:
        settings.GEMINI_BASE_URL = proxy_url
        with pytest.raises(gateway.UpstreamError) as raised:
            await gateway.mint_token(api_key="sandbox-key", config=a_token_config(), sent=sent)

    assert raised.value.code == "upstream_unavailable"
    assert len(sent) == 2  # the first try and its resend
    assert sent[0] == sent[1]
    assert sent[-1]["uses"] == 1
