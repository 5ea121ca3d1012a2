"""The Gemini gateway: the one place that calls Google (docs/architecture.md).

One async google-genai client per credential (and event loop), reused for every request:
building a client per call is slow and, per the SDK's quirks, breaks once it is collected.
Every SDK failure is mapped to one of the contract's upstream errors.
"""

import asyncio
import contextvars
import functools
import hashlib
import json
import math
import re
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx2
from django.conf import settings
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from apps.issuance.transport import UpstreamTransport

GOOGLE_BASE_URL = "https://generativelanguage.googleapis.com"
API_VERSION = "v1alpha"
CLIENT_CACHE_SIZE = 256
# The upstream connection pool: no cap on concurrent mints (the server's concurrency is the
# cap), and enough idle keep-alive connections that a burst does not reconnect. The benchmark's
# baseline uses the same limits (on the SDK's stock transport unless told to use ours).
UPSTREAM_LIMITS = httpx2.Limits(max_connections=None, max_keepalive_connections=200)

# A connection that broke before Google's answer came back: most often a kept-alive connection
# the server closed just as it was reused (the server's idle timer and ours race), or, over
# TLS, one it closed earlier: the pool cannot see a close_notify that asyncio has already read
# off the socket (tests/issuance/test_transport.py). Sent once more, as urllib3 does. If
# Google did mint the first time, that token's name never reached anyone: it only expires.
CONNECTION_DROPPED = (httpx2.ReadError, httpx2.WriteError, httpx2.RemoteProtocolError)

# Google's answers that mean "not now": its 503 UNAVAILABLE and 429 RESOURCE_EXHAUSTED (and a
# connection that dropped twice). Our 503 upstream_unavailable says when to try again: what
# Google said (its Retry-After header, else the RetryInfo in its error body), or a few seconds;
# never longer than a client should hold an end user waiting for a token.
TRANSIENT_STATUSES = (429, 503)
DEFAULT_RETRY_AFTER = 5
MAX_RETRY_AFTER = 60
_RETRY_DELAY = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")  # google.protobuf.Duration, "12.5s"

# The exact JSON body of the current mint call, captured from the wire for the audit row. A
# holder list, not the value itself, so the capture survives any task the SDK runs it in.
_sent_body: contextvars.ContextVar[list] = contextvars.ContextVar("sent_body")


class UpstreamError(Exception):
    """A failed mint, already translated to the public error contract."""

    def __init__(self, code: str, http_status: int, detail: str, retry_after: int | None = None):
        super().__init__(detail)
        self.code = code
        self.http_status = http_status
        self.detail = detail
        self.retry_after = retry_after


@dataclass(frozen=True)
class MintedToken:
    name: str
    request_body: dict[str, Any] | None
    latency_ms: int


async def _capture_request(request: httpx2.Request) -> None:
    holder = _sent_body.get(None)
    if holder is not None:
        holder.append(json.loads(request.content) if request.content else None)


class _ClientCache:
    """Clients keyed by event loop and by a hash of the API key, least recently used out."""

    def __init__(self):
        self._by_loop: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    async def get(self, api_key: str) -> genai.Client:
        loop = asyncio.get_running_loop()
        clients: OrderedDict = self._by_loop.setdefault(loop, OrderedDict())
        fingerprint = hashlib.sha256(api_key.encode()).hexdigest()
        built = clients.get(fingerprint)
        if built is None:
            # Building a client takes a few hundred ms of CPU: not on the event loop, and once
            # per key however many requests arrive meanwhile (a cold process under load would
            # otherwise build, and throw away, one per waiting request).
            built = loop.run_in_executor(None, _build_client, api_key)
            built.add_done_callback(functools.partial(_forget_failed, clients, fingerprint))
            clients[fingerprint] = built
            while len(clients) > CLIENT_CACHE_SIZE:
                clients.popitem(last=False)
        clients.move_to_end(fingerprint)
        # Shielded: one waiter hanging up must not cancel the build the others wait for.
        return await asyncio.shield(built)

    def clear(self) -> None:
        self._by_loop = weakref.WeakKeyDictionary()


def _forget_failed(clients: OrderedDict, fingerprint: str, built: asyncio.Future) -> None:
    """A build that failed is not cached: the next request tries again."""
    if (built.cancelled() or built.exception()) and clients.get(fingerprint) is built:
        del clients[fingerprint]


def _build_client(api_key: str) -> genai.Client:
    timeout_s = settings.GEMINI_TIMEOUT_MS / 1000
    transport = httpx2.AsyncClient(
        timeout=httpx2.Timeout(timeout_s),
        transport=UpstreamTransport(UPSTREAM_LIMITS),
        event_hooks={"request": [_capture_request]},
    )
    return genai.Client(
        api_key=api_key,
        http_options=types.HttpOptions(
            api_version=API_VERSION,
            base_url=settings.GEMINI_BASE_URL or GOOGLE_BASE_URL,
            timeout=settings.GEMINI_TIMEOUT_MS,
            httpx_async_client=transport,
        ),
    )


clients = _ClientCache()


def _google_status(error: genai_errors.APIError) -> str:
    return f"Google answered {error.code} {error.status or ''}".strip()


def retry_after(error: genai_errors.APIError) -> int:
    """Seconds to wait, as Google said (header, else RetryInfo), within 1..MAX_RETRY_AFTER."""
    seconds = _header_delay(getattr(error, "response", None))
    if seconds is None:
        seconds = _retry_info_delay(error.details)
    if seconds is None:
        return DEFAULT_RETRY_AFTER
    return math.ceil(max(1.0, min(float(MAX_RETRY_AFTER), seconds)))


def _header_delay(response: Any) -> float | None:
    """``Retry-After``: delay-seconds or an HTTP-date (RFC 9110); None if absent or unreadable."""
    value = (getattr(response, "headers", None) or {}).get("retry-after", "").strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return (when - datetime.now(UTC)).total_seconds()


def _retry_info_delay(details: Any) -> float | None:
    """``error.details[]``'s google.rpc.RetryInfo ``retryDelay`` ("12s"), if Google sent one."""
    error = details.get("error", details) if isinstance(details, dict) else {}
    for detail in (error.get("details") if isinstance(error, dict) else None) or []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("rpc.RetryInfo"):
            match = _RETRY_DELAY.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


async def _create(client: genai.Client, config: types.CreateAuthTokenConfig) -> types.AuthToken:
    """One mint, sent once more if its connection dropped before the answer (CONNECTION_DROPPED)."""
    try:
        return await client.aio.auth_tokens.create(config=config)
    except CONNECTION_DROPPED:
        return await client.aio.auth_tokens.create(config=config)


async def mint_token(
    *, api_key: str, config: types.CreateAuthTokenConfig, sent: list | None = None
) -> MintedToken:
    """Ask Google for one ephemeral token; raise UpstreamError on any failure.

    ``sent`` (the caller's list, if given) receives the body each time it goes on the wire,
    so a caller whose mint failed, timed out or was cancelled midway still knows what Google
    may have received and minted from.
    """
    client = await clients.get(api_key)
    started = time.perf_counter()
    sent = [] if sent is None else sent
    _sent_body.set(sent)
    try:
        token = await _create(client, config)
    except Exception as error:
        mapped = _upstream_error(error)
        if mapped is None:
            raise
        raise mapped from None
    latency_ms = round((time.perf_counter() - started) * 1000)
    if not token.name:
        raise UpstreamError("upstream_error", 502, "Google answered without a token name.")
    return MintedToken(
        name=token.name, request_body=sent[-1] if sent else None, latency_ms=latency_ms
    )


def _upstream_error(error: Exception) -> UpstreamError | None:
    """An SDK or transport failure in the contract's terms; None for anything unforeseen."""
    if isinstance(error, genai_errors.APIError):
        if error.code in TRANSIENT_STATUSES:
            return UpstreamError(
                "upstream_unavailable", 503, _google_status(error), retry_after(error)
            )
        return UpstreamError("upstream_error", 502, _google_status(error))
    if isinstance(error, httpx2.TimeoutException | TimeoutError):
        return UpstreamError("upstream_timeout", 504, "Google did not answer in time.")
    if isinstance(error, httpx2.TransportError):
        return UpstreamError(
            "upstream_unavailable", 503, "Google could not be reached.", DEFAULT_RETRY_AFTER
        )
    if isinstance(error, json.JSONDecodeError):  # a 200 whose body is not JSON
        return UpstreamError("upstream_error", 502, "Google answered with a non-JSON body.")
    return None
