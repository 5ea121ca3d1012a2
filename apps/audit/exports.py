"""Streaming CSV and JSON-lines exports of grants, in constant memory.

Rows are read in keyset pages (by id, newest first) rather than with one long cursor, so
memory stays flat however many rows match and no transaction stays open between pages.
Under ASGI the pages are fetched by an async iterator: Django would otherwise buffer a
sync iterator whole before sending a byte.
"""

import csv
import io
import json
from collections.abc import AsyncIterator, Iterator
from datetime import datetime

from asgiref.sync import sync_to_async
from django.db.models import QuerySet

from apps.audit.models import TokenGrant

# What an auditor gets: the record, never a secret (the token was never stored; the
# fingerprint is a one-way HMAC) and not the engine's bookkeeping.
EXPORT_FIELDS = (
    "public_id",
    "requested_at",
    "outcome",
    "error_code",
    "detail",
    "client_app__name",
    "client_key_prefix",
    "member__email",
    "end_user",
    "profile_slug",
    "profile_version",
    "requested",
    "request_body",
    "issued_at",
    "expire_time",
    "new_session_expire_time",
    "uses",
    "upstream_latency_ms",
    "lifecycle",
    "session_window_closed_at",
    "expired_at",
    "request_id",
    "ip",
    "user_agent",
    "token_fingerprint",
)
HEADER = [field.replace("__", "_") for field in EXPORT_FIELDS]
PAGE_SIZE = 2000


def _plain(value):
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return "" if value is None else str(value)


def _page(queryset: QuerySet[TokenGrant], fmt: str, before: int | None) -> tuple[str, int | None]:
    """One page of the export as text, and the id to continue before (None when done)."""
    page = queryset.order_by("-id")
    if before is not None:
        page = page.filter(id__lt=before)
    rows = list(page.values_list("id", *EXPORT_FIELDS)[:PAGE_SIZE])
    out = io.StringIO()
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerows([_plain(value) for value in row[1:]] for row in rows)
    else:
        for row in rows:
            record = dict(zip(HEADER, row[1:], strict=True))
            out.write(json.dumps(record, default=str, separators=(",", ":")) + "\n")
    more = len(rows) == PAGE_SIZE
    return out.getvalue(), (rows[-1][0] if more else None)


def _header(fmt: str) -> str:
    if fmt != "csv":
        return ""
    out = io.StringIO()
    csv.writer(out).writerow(HEADER)
    return out.getvalue()


def grant_export_lines(queryset: QuerySet[TokenGrant], fmt: str) -> Iterator[str]:
    yield _header(fmt)
    before = None
    while True:
        text, before = _page(queryset, fmt, before)
        yield text
        if before is None:
            return


async def grant_export_lines_async(queryset: QuerySet[TokenGrant], fmt: str) -> AsyncIterator[str]:
    yield _header(fmt)
    before = None
    while True:
        text, before = await sync_to_async(_page)(queryset, fmt, before)
        yield text
        if before is None:
            return
