"""Python client for Ephemera's token API: short-lived Gemini Live tokens for your end users.

    from ephemera_client import EphemeraClient

    with EphemeraClient("https://portal.example", key) as client:
        issued = client.token("support-voice", end_user="user-42")

See README.md beside pyproject.toml for the errors and the retry rules.
"""

from ephemera_client._client import USER_AGENT, AsyncEphemeraClient, EphemeraClient
from ephemera_client._errors import (
    ERRORS_BY_CODE,
    EphemeraConnectionError,
    EphemeraError,
    Forbidden,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    ProfileNotFound,
    QuotaBackendUnavailable,
    QuotaExceeded,
    Unauthenticated,
    UnexpectedResponse,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from ephemera_client._models import IssuedToken, Profile
from ephemera_client._version import __version__

__all__ = [
    "ERRORS_BY_CODE",
    "USER_AGENT",
    "AsyncEphemeraClient",
    "EphemeraClient",
    "EphemeraConnectionError",
    "EphemeraError",
    "Forbidden",
    "InternalError",
    "InvalidRequest",
    "IssuedToken",
    "MethodNotAllowed",
    "NotFound",
    "Profile",
    "ProfileNotFound",
    "QuotaBackendUnavailable",
    "QuotaExceeded",
    "Unauthenticated",
    "UnexpectedResponse",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "__version__",
]
