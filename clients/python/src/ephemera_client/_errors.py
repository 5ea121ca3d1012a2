"""The API's refusals as exceptions: one class per ``error.code`` of the contract.

Every answer that is not a success raises a subclass of :class:`EphemeraError`, so callers
can catch the base class and still branch on ``code``, ``status`` or the class. The list of
codes mirrors the server's contract (``apps/issuance/contract.py`` ``ERROR_CODES``); a code
this version does not know still raises, as the base class, and is retried by its status.
"""

from __future__ import annotations

from typing import Any, ClassVar

# The HTTP statuses the contract marks "retry after Retry-After": a quota used up (429) and
# a briefly unavailable dependency (503). Nothing else is ever retried.
RETRY_STATUSES = frozenset({429, 503})


class EphemeraError(Exception):
    """A request the API did not grant, or an answer that could not be had or read.

    ``code`` is the contract's stable ``error.code`` (empty when there was no such answer),
    ``status`` the HTTP status (``None`` when no answer came), ``retry_after`` the seconds the
    server asked to wait, ``field`` the request field an ``invalid_request`` names, ``limit``
    the quota a ``quota_exceeded`` names, ``request_id`` the answer's ``X-Request-ID`` (quote
    it to the portal's operator) and ``body`` the decoded JSON body, if any.
    """

    code_name: ClassVar[str] = ""
    http_status: ClassVar[int | None] = None
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        code: str = "",
        status: int | None = None,
        retry_after: float | None = None,
        field: str | None = None,
        limit: str | None = None,
        request_id: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.code_name
        self.status = status if status is not None else self.http_status
        self.retry_after = retry_after
        self.field = field
        self.limit = limit
        self.request_id = request_id
        self.body = body

    def __str__(self) -> str:
        parts = [part for part in (self.code, str(self.status or "")) if part]
        head = f"[{' '.join(parts)}] " if parts else ""
        tail = f" (request id {self.request_id})" if self.request_id else ""
        return f"{head}{self.message}{tail}"

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(code={self.code!r}, status={self.status!r}, {self.message!r})"


class InvalidRequest(EphemeraError):
    """400: the request is malformed or a value is out of range; ``field`` names it."""

    code_name, http_status = "invalid_request", 400


class Unauthenticated(EphemeraError):
    """401: no valid client key was sent (a wrong, revoked or expired key)."""

    code_name, http_status = "unauthenticated", 401


class Forbidden(EphemeraError):
    """403: the key may not do this (a disabled app, a profile the app may not use, a read-only
    key asking for a token)."""

    code_name, http_status = "forbidden", 403


class ProfileNotFound(EphemeraError):
    """404: the organisation has no active profile by that slug."""

    code_name, http_status = "profile_not_found", 404


class NotFound(EphemeraError):
    """404: there is no such endpoint (a wrong base URL or an older server)."""

    code_name, http_status = "not_found", 404


class MethodNotAllowed(EphemeraError):
    """405: the endpoint does not take this HTTP method."""

    code_name, http_status = "method_not_allowed", 405


class QuotaExceeded(EphemeraError):
    """429: a quota or plan limit is used up; ``limit`` names it, ``retry_after`` says when
    it frees up. Retried automatically only when that is within ``max_retry_wait``."""

    code_name, http_status, retryable = "quota_exceeded", 429, True


class InternalError(EphemeraError):
    """500: a bug on the server's side; no token was issued. Not retried."""

    code_name, http_status = "internal_error", 500


class UpstreamError(EphemeraError):
    """502: Google refused the mint or answered something unusable; retrying will not help."""

    code_name, http_status = "upstream_error", 502


class UpstreamUnavailable(EphemeraError):
    """503: Google is briefly unavailable; retried after ``Retry-After``."""

    code_name, http_status, retryable = "upstream_unavailable", 503, True


class QuotaBackendUnavailable(EphemeraError):
    """503: the portal cannot check quotas right now, so it issued nothing; retried after
    ``Retry-After``."""

    code_name, http_status, retryable = "quota_backend_unavailable", 503, True


class UpstreamTimeout(EphemeraError):
    """504: Google did not answer in time. Never retried: a token may have been minted (it is
    simply never handed out, and expires), and a retry would spend the caller's quota again."""

    code_name, http_status = "upstream_timeout", 504


class EphemeraConnectionError(EphemeraError):
    """No answer: the server could not be reached, or the connection failed or timed out.

    A failure to connect is retried (nothing was sent); a failure after the request was sent
    is not, since the server may have minted a token for it.
    """


class UnexpectedResponse(EphemeraError):
    """An answer that is not the API's: not JSON, or JSON not in the contract's shape (a proxy's
    error page, a wrong base URL). ``status`` and ``body`` hold what came."""


# Every ``error.code`` of the contract, with its class (kept equal to the server's list by
# tests/client_python/test_contract.py).
ERRORS_BY_CODE: dict[str, type[EphemeraError]] = {
    error.code_name: error
    for error in (
        InvalidRequest,
        Unauthenticated,
        Forbidden,
        ProfileNotFound,
        NotFound,
        MethodNotAllowed,
        QuotaExceeded,
        InternalError,
        UpstreamError,
        UpstreamUnavailable,
        QuotaBackendUnavailable,
        UpstreamTimeout,
    )
}
