"""The two clients, sync and async, over one core that builds requests, reads answers and
decides retries, so both behave the same."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import httpx

from ephemera_client._errors import (
    ERRORS_BY_CODE,
    RETRY_STATUSES,
    EphemeraConnectionError,
    EphemeraError,
    UnexpectedResponse,
)
from ephemera_client._models import IssuedToken, Profile
from ephemera_client._version import __version__

logger = logging.getLogger("ephemera_client")

TOKENS_PATH = "/api/v1/tokens"
PROFILES_PATH = "/api/v1/profiles"
USER_AGENT = f"ephemera-client/{__version__} python-httpx/{httpx.__version__}"
# Jitter on top of a wait (and the whole wait where the server named none): up to
# BACKOFF_BASE * 2**attempt seconds, spread at random so that many clients refused together
# do not all come back in the same instant.
BACKOFF_BASE = 0.5
# Failures to connect: nothing was sent, so nothing can have been minted.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)


def _masked(key: str) -> str:
    """``eph_<prefix>_****``: the prefix (the portal shows it too) names the key; the secret
    never leaves this object."""
    scheme, _, rest = key.partition("_")
    prefix, _, secret = rest.partition("_")
    if scheme and prefix and secret:
        return f"{scheme}_{prefix}_****"
    return "****"


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (the contract's form), or an HTTP date; None if unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:  # "-0000": UTC with no zone of origin, read as naive
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - datetime.now(UTC)).total_seconds()
    return max(seconds, 0.0)


class _Core:
    """Everything but the I/O: the request to send, what an answer means, how long to wait."""

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        timeout: float,
        max_retries: int,
        max_retry_wait: float,
        random_source: Callable[[], float],
    ) -> None:
        if not key:
            raise ValueError("A client key is required (Authorization: Bearer eph_…).")
        self.base_url = base_url.rstrip("/")
        self._key = key
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self._random = random_source

    def repr(self, name: str) -> str:
        return f"{name}(base_url={self.base_url!r}, key={_masked(self._key)!r})"

    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._key}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    @staticmethod
    def token_body(
        profile: str,
        end_user: str,
        uses: int | None,
        expire_seconds: int | None,
        new_session_seconds: int | None,
    ) -> dict[str, Any]:
        """Only what the caller gave: an absent field takes the profile's own value."""
        body: dict[str, Any] = {"profile": profile}
        if end_user:
            body["end_user"] = end_user
        optional = {
            "uses": uses,
            "expire_seconds": expire_seconds,
            "new_session_seconds": new_session_seconds,
        }
        body.update({name: value for name, value in optional.items() if value is not None})
        return body

    def error_for(self, response: httpx.Response) -> EphemeraError:
        """The exception an unsuccessful answer stands for."""
        request_id = response.headers.get("X-Request-ID")
        retry_after = _retry_after(response.headers.get("Retry-After"))
        try:
            body = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict) or not isinstance(error.get("code"), str):
            if response.is_redirect:  # not followed: it would resend the key elsewhere
                what = f"a redirect to {response.headers.get('Location')!r}; fix the base URL"
            else:
                what = response.headers.get("Content-Type", "no content type")
            return UnexpectedResponse(
                f"HTTP {response.status_code} without the API's error body ({what}).",
                status=response.status_code,
                retry_after=retry_after,
                request_id=request_id,
                body=body if body is not None else response.text[:2000],
            )
        code = error["code"]
        kind = ERRORS_BY_CODE.get(code, EphemeraError)
        return kind(
            str(error.get("message") or code),
            code=code,
            status=response.status_code,
            retry_after=retry_after,
            field=error.get("field") if isinstance(error.get("field"), str) else None,
            limit=error.get("limit") if isinstance(error.get("limit"), str) else None,
            request_id=request_id,
            body=body,
        )

    def parse(self, response: httpx.Response, reader: Callable[[Any], Any]) -> Any:
        """A successful answer's body, read by ``reader``; anything unreadable is an
        :class:`UnexpectedResponse`."""
        try:
            return reader(response.json())
        except ValueError as problem:  # json's decode error is a ValueError too
            raise UnexpectedResponse(
                f"HTTP {response.status_code} with an unreadable body: {problem}",
                status=response.status_code,
                request_id=response.headers.get("X-Request-ID"),
                body=response.text[:2000],
            ) from None

    def wait_before_retry(self, error: EphemeraError, attempt: int) -> float | None:
        """Seconds to wait before trying again, or None to give up and raise ``error``.

        Only what the contract marks retryable (429 and 503, and a failure to connect) is
        retried, at most ``max_retries`` times. The server's ``Retry-After`` is honoured with
        jitter on top and the whole capped at ``max_retry_wait``; a ``Retry-After`` beyond the
        cap raises at once rather than sleep that long.
        """
        if attempt >= self.max_retries or not _retryable(error):
            return None
        jitter = self._random() * BACKOFF_BASE * 2**attempt
        if error.retry_after is None:
            return min(jitter, self.max_retry_wait)
        if error.retry_after > self.max_retry_wait:
            return None
        return min(error.retry_after + jitter, self.max_retry_wait)

    def encode(self, body: dict[str, Any] | None) -> tuple[bytes | None, dict[str, str]]:
        """The request's content and headers: JSON when there is a body."""
        headers = self.headers()
        if body is None:
            return None, headers
        return json.dumps(body).encode(), {**headers, "Content-Type": "application/json"}

    def outcome(
        self,
        method: str,
        path: str,
        answer: httpx.Response | httpx.TransportError,
        attempt: int,
    ) -> httpx.Response | float:
        """What one attempt's answer means: the successful response to read, or the seconds
        to wait before the next attempt. Raises the error to give up with."""
        if isinstance(answer, httpx.TransportError):
            error: EphemeraError = _connection_error(answer, self.url(path))
            error.__cause__ = answer
        else:
            logger.debug(
                "%s %s -> %s (request id %s)",
                method,
                path,
                answer.status_code,
                answer.headers.get("X-Request-ID", "-"),
            )
            if answer.is_success:
                return answer
            error = self.error_for(answer)
        wait = self.wait_before_retry(error, attempt)
        if wait is None:
            raise error
        logger.info("%s %s: %s; retrying in %.2f s", method, path, error, wait)
        return wait


def _retryable(error: EphemeraError) -> bool:
    if isinstance(error, EphemeraConnectionError):
        return isinstance(error.__cause__, _NOT_SENT)
    if type(error) in ERRORS_BY_CODE.values():
        return error.retryable
    return error.status in RETRY_STATUSES  # a code this version does not know, or no body


def _connection_error(problem: httpx.TransportError, url: str) -> EphemeraConnectionError:
    sent = "" if isinstance(problem, _NOT_SENT) else " after the request was sent"
    reason = str(problem) or type(problem).__name__
    return EphemeraConnectionError(f"Could not reach {url}{sent}: {reason}")


class EphemeraClient:
    """Issues tokens from an Ephemera portal with a client key (sync; see
    :class:`AsyncEphemeraClient` for asyncio).

    ``base_url`` is the portal's address (``https://portal.example``); ``key`` a client key
    that issues tokens (``eph_…``), kept out of ``repr``, logs and exceptions. Answers the
    contract marks retryable (429 ``quota_exceeded``, 503 ``upstream_unavailable`` and
    ``quota_backend_unavailable``) and failures to connect are retried up to
    ``max_retries`` times, waiting ``Retry-After`` plus jitter, never more than
    ``max_retry_wait`` seconds at a time. Nothing else is retried: not a 4xx, not a 502,
    and not a 504 ``upstream_timeout`` or a connection lost after sending, after which a
    token may have been minted (it simply expires unused).

    Pass ``http_client`` to share a connection pool, proxies or TLS settings; it stays
    yours to close. Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        timeout: float = 15.0,
        max_retries: int = 3,
        max_retry_wait: float = 30.0,
        http_client: httpx.Client | None = None,
        _sleep: Callable[[float], None] = time.sleep,
        _random: Callable[[], float] = random.random,
    ) -> None:
        self._core = _Core(
            base_url,
            key,
            timeout=timeout,
            max_retries=max_retries,
            max_retry_wait=max_retry_wait,
            random_source=_random,
        )
        self._owns_client = http_client is None
        self._http = http_client if http_client is not None else httpx.Client()
        self._sleep = _sleep

    def __repr__(self) -> str:
        return self._core.repr(type(self).__name__)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (not an ``http_client`` passed in)."""
        if self._owns_client:
            self._http.close()

    def token(
        self,
        profile: str,
        end_user: str = "",
        *,
        uses: int | None = None,
        expire_seconds: int | None = None,
        new_session_seconds: int | None = None,
    ) -> IssuedToken:
        """A new token for one end-user session (``POST /api/v1/tokens``).

        ``end_user`` names the person or device the token is for (per-end-user quotas and
        the audit trail count by it). ``uses``, ``expire_seconds`` and
        ``new_session_seconds`` may only ask for less than the profile allows; left out,
        the profile's own values apply. Raises a subclass of :class:`EphemeraError`.
        """
        body = _Core.token_body(profile, end_user, uses, expire_seconds, new_session_seconds)
        response = self._request("POST", TOKENS_PATH, body)
        return self._core.parse(response, IssuedToken.from_json)

    def profiles(self) -> list[Profile]:
        """The profiles this key may request tokens for (``GET /api/v1/profiles``)."""
        response = self._request("GET", PROFILES_PATH, None)
        return self._core.parse(response, _profiles)

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> httpx.Response:
        core, url = self._core, self._core.url(path)
        content, headers = core.encode(body)
        attempt = 0
        while True:
            try:
                answer: httpx.Response | httpx.TransportError = self._http.request(
                    method, url, content=content, headers=headers, timeout=core.timeout
                )
            except httpx.TransportError as problem:
                answer = problem
            outcome = core.outcome(method, path, answer, attempt)
            if isinstance(outcome, httpx.Response):
                return outcome
            self._sleep(outcome)
            attempt += 1


class AsyncEphemeraClient:
    """:class:`EphemeraClient` for asyncio: the same arguments, retries and errors, with
    ``async with`` and ``await client.token(...)``."""

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        timeout: float = 15.0,
        max_retries: int = 3,
        max_retry_wait: float = 30.0,
        http_client: httpx.AsyncClient | None = None,
        _sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        _random: Callable[[], float] = random.random,
    ) -> None:
        self._core = _Core(
            base_url,
            key,
            timeout=timeout,
            max_retries=max_retries,
            max_retry_wait=max_retry_wait,
            random_source=_random,
        )
        self._owns_client = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient()
        self._sleep = _sleep

    def __repr__(self) -> str:
        return self._core.repr(type(self).__name__)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool (not an ``http_client`` passed in)."""
        if self._owns_client:
            await self._http.aclose()

    async def token(
        self,
        profile: str,
        end_user: str = "",
        *,
        uses: int | None = None,
        expire_seconds: int | None = None,
        new_session_seconds: int | None = None,
    ) -> IssuedToken:
        """As :meth:`EphemeraClient.token`."""
        body = _Core.token_body(profile, end_user, uses, expire_seconds, new_session_seconds)
        response = await self._request("POST", TOKENS_PATH, body)
        return self._core.parse(response, IssuedToken.from_json)

    async def profiles(self) -> list[Profile]:
        """As :meth:`EphemeraClient.profiles`."""
        response = await self._request("GET", PROFILES_PATH, None)
        return self._core.parse(response, _profiles)

    async def _request(self, method: str, path: str, body: dict[str, Any] | None) -> httpx.Response:
        core, url = self._core, self._core.url(path)
        content, headers = core.encode(body)
        attempt = 0
        while True:
            try:
                answer: httpx.Response | httpx.TransportError = await self._http.request(
                    method, url, content=content, headers=headers, timeout=core.timeout
                )
            except httpx.TransportError as problem:
                answer = problem
            outcome = core.outcome(method, path, answer, attempt)
            if isinstance(outcome, httpx.Response):
                return outcome
            await self._sleep(outcome)
            attempt += 1


def _profiles(data: Any) -> list[Profile]:
    if not isinstance(data, list):
        raise ValueError("the answer is not a JSON list")
    return [Profile.from_json(item) for item in data]
