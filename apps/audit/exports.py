"""Streaming CSV and JSON-lines exports of grants, in constant memory.

Rows are read in keyset pages (by id, newest first) rather than with one long cursor, so
memory stays flat however many rows match and no transaction stays open between pages.
Under ASGI the pages are fetched by an async iterator: Django would otherwise buffer a
sync iterator whole before sending a byte.

The CSV is made to be opened in a spreadsheet, and most of its text comes from client apps
and their end users (``end_user``, ``user_agent``, ``detail``, ...). A cell a spreadsheet
would read as a formula (``=HYPERLINK(...)``) is written with a leading ``'``, OWASP's
recommendation, which spreadsheets take as "this is text"; every cell is quoted so a
spreadsheet splitting on ``;`` cannot start a new cell mid-value. JSON lines are for
programs and keep every value exact.
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


# What makes a spreadsheet read a cell as a formula: OWASP's list (= + - @ tab CR), plus LF
# and NUL (ASVS 1.2.10), and the full-width forms some spreadsheets accept for = + - @.
FORMULA_TRIGGERS = frozenset("=+-@\t\r\n\0\uff1d\uff0b\uff0d\uff20")


def _plain(value):
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return "" if value is None else str(value)


def spreadsheet_safe(value) -> str:
    """One CSV cell that no spreadsheet evaluates.

    Text is prefixed with ``'`` when it starts with a trigger, also after leading spaces
    (a spreadsheet may trim them on import). Numbers are left as numbers: the numeric
    columns (``profile_version``, ``uses``, ``upstream_latency_ms``) are positive integer
    fields, so a leading ``-`` never occurs in them, and a number is not a formula.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    text = _plain(value)
    if text[:1] in FORMULA_TRIGGERS or text.lstrip()[:1] in FORMULA_TRIGGERS:
        return "'" + text
    return text


def _page(queryset: QuerySet[TokenGrant], fmt: str, before: int | None) -> tuple[str, int | None]:
    """One page of the export as text, and the id to continue before (None when done)."""
    page = queryset.order_by("-id")
    if before is not None:
        page = page.filter(id__lt=before)
    rows = list(page.values_list("id", *EXPORT_FIELDS)[:PAGE_SIZE])
    out = io.StringIO()
    if fmt == "csv":
        writer = csv.writer(out, quoting=csv.QUOTE_ALL)
        writer.writerows([spreadsheet_safe(value) for value in row[1:]] for row in rows)
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
    csv.writer(out, quoting=csv.QUOTE_ALL).writerow(HEADER)
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
