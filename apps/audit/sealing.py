"""The hash chain's arithmetic, shared by sealing (a write) and verification (a read).

A record's digest covers its sealed fields, its id included, in a canonical JSON form; a
seal's roots hash its ``[id, digest]`` entries in id order; the seal's hash chains its roots
to the previous seal. The same database must give back the same values, which is why
datetimes are normalised to UTC and JSON objects are sorted.
"""

import hashlib
import json
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet

from apps.audit.models import PolicyChange, TokenGrant

GENESIS = "0" * 64
GRANT_FIELDS: tuple[str, ...] = TokenGrant.SEALED_FIELDS
CHANGE_FIELDS: tuple[str, ...] = (
    "id",
    "organization_id",
    "occurred_at",
    "actor_label",  # not actor_id: deleting the account sets it to NULL
    "action",
    "object_type",
    "object_id",
    "object_repr",
    "before",
    "after",
)
# Half a SHA-256: 128 bits is ample to notice an edit, and halves what seals store.
DIGEST_CHARS = 32

Entry = list  # [record id, digest]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date | uuid.UUID | Decimal):
        return str(value)
    return value


def record_digest(values: Iterable[Any]) -> str:
    canonical = json.dumps(
        [_plain(value) for value in values], sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:DIGEST_CHARS]


def entries_root(entries: Iterable[Entry]) -> str:
    digest = hashlib.sha256()
    for record_id, record in entries:
        digest.update(f"{record_id}:{record}\n".encode())
    return digest.hexdigest()


def seal_hash(prev_hash: str, grants_root: str, changes_root: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{grants_root}\n{changes_root}".encode()).hexdigest()


def _entries(queryset: QuerySet, fields: tuple[str, ...], chunk: int) -> Iterator[Entry]:
    """``[id, digest]`` per record in id order, read in keyset pages of ``chunk`` rows."""
    after = None
    while True:
        page = queryset.order_by("id")
        if after is not None:
            page = page.filter(id__gt=after)
        rows = list(page.values_list(*fields)[:chunk])
        for row in rows:
            yield [row[0], record_digest(row)]
        if len(rows) < chunk:
            return
        after = rows[-1][0]


def grant_entries(queryset: QuerySet[TokenGrant], chunk: int = 5000) -> Iterator[Entry]:
    return _entries(queryset, GRANT_FIELDS, chunk)


def change_entries(queryset: QuerySet[PolicyChange], chunk: int = 5000) -> Iterator[Entry]:
    return _entries(queryset, CHANGE_FIELDS, chunk)
