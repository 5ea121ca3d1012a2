"""The usage report as CSV, for ``GET /api/v1/usage?format=csv`` and the admin's export."""

import csv
import io

from apps.audit.exports import spreadsheet_safe
from apps.audit.selectors import UsageReport

HEADER = ("day", "app", "profile", "issued", "denied", "failed")


def usage_csv(report: UsageReport) -> str:
    """The header and one line per day, app and profile. App names and profile slugs are
    admin-typed and this file is forwarded, so a cell a spreadsheet would run as a formula
    is neutralised (``exports.spreadsheet_safe``); an app or profile that is none is empty."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(HEADER)
    writer.writerows(
        (
            row.day.isoformat(),
            spreadsheet_safe(row.app),
            spreadsheet_safe(row.profile),
            row.issued,
            row.denied,
            row.failed,
        )
        for row in report.rows
    )
    return out.getvalue()
