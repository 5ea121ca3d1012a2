"""Encryption at rest for stored secrets: Fernet keys from FIELD_ENCRYPTION_KEYS, newest first.

MultiFernet decrypts with any listed key and encrypts with the first, so a new key is rolled
out by putting it in front, re-encrypting (``manage.py rotate_encryption_keys``), then
dropping the old one.
"""

import base64
import hashlib
import hmac
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class SecretUnreadable(Exception):
    """No configured key opens this ciphertext (a key was dropped too early)."""


@cache
def _fernet(keys: tuple[str, ...], fallback: str) -> MultiFernet:
    if keys:
        try:
            return MultiFernet([Fernet(key.encode()) for key in keys])
        except ValueError as error:
            raise ImproperlyConfigured(
                "FIELD_ENCRYPTION_KEYS must hold url-safe base64 Fernet keys"
            ) from error
    if not fallback:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS must be set to store secrets.")
    derived = base64.urlsafe_b64encode(hashlib.sha256(fallback.encode()).digest())
    return MultiFernet([Fernet(derived)])


def _current() -> MultiFernet:
    # Only under DEBUG may a key be derived from SECRET_KEY, so `make dev` needs no setup.
    fallback = settings.SECRET_KEY if settings.DEBUG else ""
    return _fernet(tuple(settings.FIELD_ENCRYPTION_KEYS), fallback)


def encrypt_secret(plaintext: str) -> str:
    return _current().encrypt(plaintext.encode()).decode()


def decrypt_secret(ciphertext: str) -> str:
    try:
        return _current().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("No FIELD_ENCRYPTION_KEYS entry opens this secret.") from None


def reencrypt_secret(ciphertext: str) -> str:
    """The same secret under the newest key."""
    try:
        return _current().rotate(ciphertext.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("No FIELD_ENCRYPTION_KEYS entry opens this secret.") from None


def fingerprint_key() -> bytes:
    """AUDIT_HMAC_KEY; derived from SECRET_KEY only under DEBUG."""
    key = settings.AUDIT_HMAC_KEY or (settings.SECRET_KEY if settings.DEBUG else "")
    if not key:
        raise ImproperlyConfigured("AUDIT_HMAC_KEY must be set to issue tokens.")
    return key.encode()


def token_fingerprint(token: str) -> str:
    """HMAC-SHA256 of an issued token under AUDIT_HMAC_KEY: matchable, never reversible."""
    return hmac.new(fingerprint_key(), token.encode(), hashlib.sha256).hexdigest()
