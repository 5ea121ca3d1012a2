"""A new key's one showing, between the POST that made it and the page that shows it.

The POST that makes a key answers with a redirect, so a reload repeats only the GET and
never makes another key. The raw key waits for that GET in the admin's session, encrypted
with the field encryption keys (the session row is no place for a secret in clear), and the
first GET takes it out: a reload, a second tab or the browser's history find nothing to show.
A key nobody came for within ``HELD_FOR_SECONDS`` is not shown at all. The key never appears
in a URL, a log line or the audit trail.
"""

import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from portal.crypto import SecretUnreadable, decrypt_secret, encrypt_secret

SESSION_KEY = "clients:keys-to-show"
HELD_FOR_SECONDS = 600


@dataclass(frozen=True)
class Showing:
    raw_key: str
    rotated_from: str  # the old key's prefix when this key replaced one, else ""


def hold(session: MutableMapping[str, Any], key_id: int, raw_key: str, rotated_from: str = ""):
    """Keep ``raw_key`` for the one GET that shows it (the redirect's target)."""
    held = _fresh(session.get(SESSION_KEY) or {})
    held[str(key_id)] = {
        "key": encrypt_secret(raw_key),
        "at": time.time(),
        "rotated_from": rotated_from,
    }
    session[SESSION_KEY] = held


def take(session: MutableMapping[str, Any], key_id: int) -> Showing | None:
    """The key held for ``key_id``, removed as it is read; None once it has been shown."""
    held = _fresh(session.get(SESSION_KEY) or {})
    entry = held.pop(str(key_id), None)
    if held:
        session[SESSION_KEY] = held
    else:
        session.pop(SESSION_KEY, None)
    if entry is None:
        return None
    try:
        return Showing(decrypt_secret(entry["key"]), entry["rotated_from"])
    except SecretUnreadable:  # the encryption keys changed in between: it cannot be shown
        return None


def _fresh(held: dict) -> dict:
    """Only the keys still waiting: one never fetched does not stay in the session."""
    now = time.time()
    return {key_id: entry for key_id, entry in held.items() if now - entry["at"] < HELD_FOR_SECONDS}
