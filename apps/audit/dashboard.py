"""The auditor's dashboard page: the selectors' numbers, each with the link to its grants.

Every number leads to the grants changelist filtered to exactly what it counts: ``from`` /
``to`` (``RequestedBetweenFilter``: UTC days, both inclusive), ``app`` and ``profile`` (the
organisation's own rows), ``outcome__exact`` (the outcome filter), and what only the dashboard
asks for (``DashboardSelectionFilter``): ``hour`` / ``hours``, ``key_prefix``, ``end_user``,
``outcomes`` and ``live``.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from django.urls import reverse

from apps.audit import charts, selectors
from apps.audit.dashboard_filters import HOUR_FORMAT
from apps.audit.models import TokenGrant
from apps.audit.selectors import BucketUsage, UsageSpan
from apps.tenants.models import Organization

# by: (heading, column, element id)
BREAKDOWN_TITLES = {
    "client_app": ("Apps", "App", "top-apps"),
    "profile": ("Profiles", "Profile", "top-profiles"),
    "key": ("Keys", "Key", "top-keys"),
    "end_user": ("End users", "End user", "top-end-users"),
}
# The parameter a breakdown filters the grants list with.
BREAKDOWN_PARAMS = {
    "client_app": "app",
    "profile": "profile",
    "key": "key_prefix",
    "end_user": "end_user",
}
OUTCOME_PARAMS = {
    "issued": {"outcome__exact": TokenGrant.Outcome.ISSUED},
    "denied": {"outcomes": "denied"},
    "errors": {"outcomes": "errors"},
}


def grants_url(params: dict[str, str]) -> str:
    url = reverse("admin:audit_tokengrant_changelist")
    return f"{url}?{urlencode(params)}" if params else url


def time_params(start: datetime, end: datetime, *, hourly: bool) -> dict[str, str]:
    """The grants asked for in ``[start, end)``: whole UTC days, or whole UTC hours."""
    if hourly:
        params = {"hour": start.astimezone(UTC).strftime(HOUR_FORMAT)}
        hours = round((end - start) / timedelta(hours=1))
        return params | ({"hours": str(hours)} if hours != 1 else {})
    last_day = (end - timedelta(microseconds=1)).astimezone(UTC).date()
    return {"from": start.astimezone(UTC).date().isoformat(), "to": last_day.isoformat()}


@dataclass(frozen=True)
class Row:
    """A breakdown row as shown: its counts and where each leads."""

    label: str
    issued: int
    refused: int
    href: str


@dataclass(frozen=True)
class Table:
    by: str
    title: str
    column: str
    element_id: str
    rows: list[Row]
    more: bool
    showing_all: bool
    all_href: str
    top_href: str
    capped: bool
    on_request: bool  # not counted unless asked: it would read every grant of the range


def _table(organization: Organization, span: UsageSpan, by: str, show_all: str) -> Table:
    showing_all = show_all == by
    on_request = not showing_all and selectors.usage_breakdown_reads_every_grant(span=span, by=by)
    limit = selectors.BREAKDOWN_ALL if showing_all else selectors.BREAKDOWN_TOP
    breakdown = (
        selectors.Breakdown(by, [], more=False)
        if on_request
        else selectors.usage_breakdown(organization=organization, span=span, by=by, limit=limit)
    )
    span_params = time_params(span.start, span.end, hourly=span.hourly)
    title, column, element_id = BREAKDOWN_TITLES[by]
    return Table(
        by=by,
        title=title,
        column=column,
        element_id=element_id,
        rows=[
            Row(
                label=row.label,
                issued=row.issued,
                refused=row.denied + row.errors,
                href=grants_url({**span_params, BREAKDOWN_PARAMS[by]: row.value}),
            )
            for row in breakdown.rows
        ],
        more=breakdown.more,
        showing_all=showing_all,
        all_href=f"?{urlencode({'range': span.name, 'all': by})}#breakdown-{by}",
        top_href=f"?{urlencode({'range': span.name})}#breakdown-{by}",
        capped=showing_all and breakdown.more,
        on_request=on_request,
    )


def dashboard_context(
    *, organization: Organization, now: datetime, range_name: str, show_all: str
) -> dict:
    """Everything the dashboard template shows for one organisation and range."""
    span = selectors.usage_span(name=range_name, now=now)
    buckets = selectors.usage_buckets(organization=organization, span=span)
    totals = selectors.usage_totals(buckets)
    span_params = time_params(span.start, span.end, hourly=span.hourly)

    def bucket_href(bucket: BucketUsage) -> str:
        return grants_url(time_params(bucket.start, bucket.end, hourly=span.hourly))

    active = selectors.tokens_active(organization=organization, now=now)
    return {
        "span": span,
        "ranges": [
            {"name": name, "label": label, "current": name == span.name, "href": f"?range={name}"}
            for name, (label, _, _) in selectors.USAGE_RANGES.items()
        ],
        "buckets": buckets,
        "chart": charts.stacked_bars(buckets, hourly=span.hourly, href=bucket_href),
        "bucket_rows": [
            {
                "name": charts.bucket_name(bucket, hourly=span.hourly),
                "usage": bucket,
                "href": bucket_href(bucket),
            }
            for bucket in reversed(buckets)
            if bucket.total
        ],
        "totals": {"issued": totals.issued, "denied": totals.denied, "errors": totals.errors},
        "total": totals.total,
        "top_n": selectors.BREAKDOWN_TOP,
        "total_links": {
            "all": grants_url(span_params),
            **{
                name: grants_url({**span_params, **extra}) for name, extra in OUTCOME_PARAMS.items()
            },
        },
        "active": active,
        "active_now": active.count,
        "active_href": grants_url({"live": "1"}),
        "tables": [_table(organization, span, by, show_all) for by in selectors.BREAKDOWNS],
        "counted_through": selectors.usage_counted_through(organization=organization),
        "runs": selectors.cleanup_runs_latest(organization=organization),
        "seal": selectors.seal_latest(organization=organization),
    }
