"""System checks for configuration that is legal for tests but wrong in production."""

from cryptography.fernet import Fernet
from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

MIN_AUDIT_HMAC_KEY_LENGTH = 32


@register(Tags.security, deploy=True)
def check_google_sign_in(app_configs, **kwargs) -> list[Warning]:
    problems = []
    if settings.GOOGLE_OAUTH_MOCK_URL:
        problems.append(
            Warning(
                "GOOGLE_OAUTH_MOCK_URL is set: sign-in talks to a fake OIDC server, not Google.",
                hint="Unset GOOGLE_OAUTH_MOCK_URL in production.",
                id="ephemera.W001",
            )
        )
    if not (settings.GOOGLE_OAUTH_CLIENT_ID and settings.GOOGLE_OAUTH_CLIENT_SECRET):
        problems.append(
            Warning(
                "Google sign-in is not configured: members cannot sign in.",
                hint="Set GOOGLE_OAUTH_CLIENT_ID and GOOGLE_OAUTH_CLIENT_SECRET.",
                id="ephemera.W002",
            )
        )
    return problems


@register(Tags.security, deploy=True)
def check_secret_keys(app_configs, **kwargs) -> list[Error]:
    """Without these, production could not store an org's Gemini key or fingerprint tokens."""
    problems = []
    if not settings.FIELD_ENCRYPTION_KEYS:
        problems.append(
            Error(
                "FIELD_ENCRYPTION_KEYS is not set: organisations' Gemini keys cannot be stored.",
                hint="Set it to one or more Fernet keys, newest first.",
                id="ephemera.E001",
            )
        )
    elif not all(_is_fernet_key(key) for key in settings.FIELD_ENCRYPTION_KEYS):
        problems.append(
            Error(
                "FIELD_ENCRYPTION_KEYS holds something that is not a Fernet key.",
                hint="Generate one with cryptography.fernet.Fernet.generate_key().",
                id="ephemera.E003",
            )
        )
    if not settings.AUDIT_HMAC_KEY:
        problems.append(
            Error(
                "AUDIT_HMAC_KEY is not set: issued tokens cannot be fingerprinted for the audit.",
                hint="Set it to a long random string and keep it stable.",
                id="ephemera.E002",
            )
        )
    elif len(settings.AUDIT_HMAC_KEY) < MIN_AUDIT_HMAC_KEY_LENGTH:
        # A short key (or a placeholder left in place) makes fingerprints guessable offline.
        problems.append(
            Warning(
                f"AUDIT_HMAC_KEY is shorter than {MIN_AUDIT_HMAC_KEY_LENGTH} characters.",
                hint="Set it to a long random string, e.g. secrets.token_urlsafe(48).",
                id="ephemera.W003",
            )
        )
    return problems


def _is_fernet_key(key: str) -> bool:
    try:
        Fernet(key.encode())
    except ValueError:
        return False
    return True
