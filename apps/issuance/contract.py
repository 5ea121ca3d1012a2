"""What issuance is asked and what it answers: the caller, the request, the token, the error.

These are the public contract's terms (README, "The API") inside the code; the API turns them
into JSON and back.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from apps.clients.models import ClientApp, ClientKey
from apps.tenants.models import Organization, User


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
    token: str
    expire_time: datetime
    new_session_expire_time: datetime
    uses: int
    profile: str
    model: str
    locked_fields: list[str]
    grant_id: str
    sandbox: bool
