"""What issuance is asked and what it answers: the caller, the request, the token, the error.

These are the public contract's terms (README, "The API") inside the code; the API turns them
into JSON and back.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from apps.clients.models import ClientApp, ClientKey
from apps.tenants.models import Organization, User


@dataclass(frozen=True)
class ErrorCode:
    """One code of the public error contract: its HTTP status, what it means, and whether a
    client should try again (after ``Retry-After`` seconds, which such answers carry)."""

    code: str
    status: int
    meaning: str
    retry: bool = False


# Every ``error.code`` the API answers with (README, "The API"; docs/architecture.md). The
# OpenAPI document, the client library's typed errors and the tests all read this list.
ERROR_CODES: tuple[ErrorCode, ...] = (
    ErrorCode(
        "invalid_request",
        400,
        "The request is malformed: not a UTF-8 JSON object, a duplicate key, a control "
        "character, too deep, an unknown field or a value out of range. `field` names it.",
    ),
    ErrorCode("unauthenticated", 401, "No valid client key (or member session) was sent."),
    ErrorCode(
        "forbidden",
        403,
        "The caller may not do this: a disabled app or organisation, a profile the app may "
        "not use, a read-only key asking for a token, or a failed CSRF check.",
    ),
    ErrorCode("profile_not_found", 404, "The organisation has no active profile by that slug."),
    ErrorCode("not_found", 404, "There is no such endpoint under /api/."),
    ErrorCode("method_not_allowed", 405, "The endpoint does not take this HTTP method."),
    ErrorCode(
        "quota_exceeded",
        429,
        "A quota or plan limit is used up; `limit` names it. Retry after `Retry-After`.",
        retry=True,
    ),
    ErrorCode("internal_error", 500, "A bug on our side; no token was issued."),
    ErrorCode(
        "upstream_error",
        502,
        "Google refused the mint or answered something unusable; retrying will not help.",
    ),
    ErrorCode(
        "upstream_unavailable",
        503,
        "Google is briefly unavailable (its 503 or 429, or a dropped connection). Retry "
        "after `Retry-After`.",
        retry=True,
    ),
    ErrorCode(
        "quota_backend_unavailable",
        503,
        "The quota store cannot be reached, so no token is issued. Retry after `Retry-After`.",
        retry=True,
    ),
    ErrorCode(
        "upstream_timeout",
        504,
        "Google did not answer in time. A token may have been minted and will simply expire.",
    ),
)
ERROR_CODES_BY_NAME = {error.code: error for error in ERROR_CODES}

# The code of an error that comes with none of its own (a framework's answer), by its status.
_CODE_BY_STATUS = {
    400: "invalid_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    500: "internal_error",
}


def code_for_status(status: int) -> str:
    """Another 4xx is ``invalid_request``, another 5xx ``internal_error``."""
    return _CODE_BY_STATUS.get(status, "invalid_request" if status < 500 else "internal_error")


# What a 500 says, from the API's handler or the middleware that shapes any other crash.
INTERNAL_ERROR_MESSAGE = "Something went wrong; no token was issued."


class IssuanceError(Exception):
    """A refusal in the public contract's terms: a stable code, a status, a plain message."""

    def __init__(
        self,
        code: str,
        http_status: int,
        message: str,
        *,
        retry_after: int | None = None,
        extra: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.http_status = http_status
        self.message = message
        self.retry_after = retry_after
        self.extra = extra or {}


@dataclass(frozen=True)
class Caller:
    """Who asks: a client app (by key) or a signed-in member, always inside one organisation."""

    organization: Organization
    client_app: ClientApp | None = None
    client_key_prefix: str = ""
    member: User | None = None
    origin: str = ""  # the browser Origin a client app called from, if any
    request_id: str = ""
    ip: str | None = None
    user_agent: str = ""
    # What the credential may do: a member's session and an issue key issue; a read key
    # (docs/adr/0019-read-only-usage-keys.md) is refused a token.
    scope: str = ClientKey.Scope.ISSUE


@dataclass(frozen=True)
class TokenRequest:
    profile: str
    end_user: str = ""
    uses: int | None = None
    expire_seconds: int | None = None
    new_session_seconds: int | None = None

    def overrides(self) -> dict[str, int]:
        asked = {
            "uses": self.uses,
            "expire_seconds": self.expire_seconds,
            "new_session_seconds": self.new_session_seconds,
        }
        return {name: value for name, value in asked.items() if value is not None}


@dataclass(frozen=True)
class IssuedToken:
    """A minted token and what it binds: ``lock`` and ``locked_fields`` as Google applies
    them, and ``config``, the profile's LiveConnectConfig a client passes to the SDK."""

    token: str
    expire_time: datetime
    new_session_expire_time: datetime
    uses: int
    profile: str
    model: str
    lock: str
    locked_fields: list[str]
    config: dict[str, Any]
    grant_id: str
    sandbox: bool
