"""Where Ephemera's e-mail goes: ``EMAIL_URL`` read into Django's e-mail settings (README,
"Configuration").

One URL names the server, its credentials and how it is protected, as ``DATABASE_URL`` does
for the database. The password is kept out of every error this module raises and out of the
parsed value's ``repr``: no part of the URL after its scheme is ever quoted back, so a typo
in it never prints the password.
"""

import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

CONSOLE = "django.core.mail.backends.console.EmailBackend"
LOCMEM = "django.core.mail.backends.locmem.EmailBackend"
SMTP = "django.core.mail.backends.smtp.EmailBackend"
# No EMAIL_URL in production: nothing is sent and owners hand the sign-in link over themselves.
DISABLED = "django.core.mail.backends.dummy.EmailBackend"

# scheme: (backend, default port, STARTTLS, implicit TLS)
_SCHEMES = {
    "smtp": (SMTP, 25, False, False),
    "smtp+tls": (SMTP, 587, True, False),
    "smtps": (SMTP, 465, False, True),
    "console": (CONSOLE, None, False, False),
    "locmem": (LOCMEM, None, False, False),
}


@dataclass(frozen=True)
class EmailSettings:
    backend: str
    host: str = "localhost"
    port: int = 25
    user: str = ""
    password: str = field(default="", repr=False)
    use_tls: bool = False
    use_ssl: bool = False


def parse_email_url(url: str) -> EmailSettings:
    """Read ``smtp://``, ``smtp+tls://`` (STARTTLS), ``smtps://`` (TLS from the first byte),
    ``console://`` or ``locmem://``; an empty URL sends nothing.

    User and password are percent-decoded, so ``@``, ``:`` and ``/`` in them are written
    ``%40``, ``%3A`` and ``%2F``.
    """
    url = url.strip()
    if not url:
        return EmailSettings(backend=DISABLED)
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in _SCHEMES:
        known = ", ".join(f"{name}://" for name in _SCHEMES)
        # Only a scheme-shaped prefix is quoted back: anything else may be the credentials.
        given = f", not {scheme}://" if re.fullmatch(r"[a-z][a-z0-9+.-]{0,15}", scheme) else ""
        raise ImproperlyConfigured(f"EMAIL_URL must start with one of {known}{given}.")
    backend, default_port, use_tls, use_ssl = _SCHEMES[scheme]
    if default_port is None:
        return EmailSettings(backend=backend)
    try:
        parts = urlsplit(url)
        port = parts.port or default_port
    except ValueError:
        raise ImproperlyConfigured("EMAIL_URL's port is not a number from 0 to 65535.") from None
    if not parts.hostname:
        raise ImproperlyConfigured("EMAIL_URL names no mail server host.")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ImproperlyConfigured(
            "EMAIL_URL takes no path, query or fragment (percent-encode '/', '?' and '#' in "
            "the user or password)."
        )
    return EmailSettings(
        backend=backend,
        host=parts.hostname,
        port=port,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        use_tls=use_tls,
        use_ssl=use_ssl,
    )


def email_enabled() -> bool:
    """Whether this portal sends e-mail at all (no EMAIL_URL in production: it does not)."""
    return settings.EMAIL_BACKEND != DISABLED
