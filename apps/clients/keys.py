"""The client key format, ``eph_<prefix>_<secret>``, and its hashing.

The prefix is a lookup handle (unique, stored in clear); the secret is stored only as its
SHA-256. A secret has 240 bits of entropy, so a fast hash is enough: nothing to brute-force.
"""

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass
from datetime import datetime

from apps.clients.models import KEY_PREFIX_LENGTH

KEY_SCHEME = "eph"
SECRET_LENGTH = 40
_ALPHABET = string.ascii_letters + string.digits  # no "_", which separates the parts


@dataclass(frozen=True)
class ParsedKey:
    prefix: str
    secret: str


def _random_text(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def generate_key() -> tuple[str, str, str]:
    """A new key as (full key shown once, prefix, secret hash)."""
    prefix, secret = _random_text(KEY_PREFIX_LENGTH), _random_text(SECRET_LENGTH)
    return f"{KEY_SCHEME}_{prefix}_{secret}", prefix, hash_secret(secret)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_key(raw: str) -> ParsedKey | None:
    scheme, _, rest = raw.strip().partition("_")
    prefix, _, secret = rest.partition("_")
    if scheme != KEY_SCHEME or len(prefix) != KEY_PREFIX_LENGTH or len(secret) != SECRET_LENGTH:
        return None
    if not all(ch in _ALPHABET for ch in prefix + secret):
        return None
    return ParsedKey(prefix=prefix, secret=secret)


def secret_matches(secret: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented secret with the stored hash."""
    return hmac.compare_digest(hash_secret(secret), stored_hash)


# Compared against when the prefix is unknown, so a miss costs the same as a wrong secret.
_DECOY_HASH = hash_secret("decoy")


def usable_key(parsed: ParsedKey | None, key, now: datetime):
    """``key`` if the presented secret is its own and it is usable at ``now``, else None.

    The secret is compared in constant time even when no key has the prefix (``key`` None),
    so a wrong prefix and a wrong secret cost the same.
    """
    secret_ok = secret_matches(
        parsed.secret if parsed else "", key.secret_hash if key else _DECOY_HASH
    )
    if key is None or not secret_ok:
        return None
    if not key.is_usable(now):
        return None
    return key
