import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import (
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_http_methods

from apps.audit import dashboard, exports, selectors
from apps.audit.admin_filters import ClientAppFilter, ProfileFilter, RequestedBetweenFilter
from apps.audit.dashboard_filters import DashboardSelectionFilter
from apps.audit.forms import UsageExportForm
from apps.audit.models import AuditSeal, CleanupRun, PolicyChange, TokenGrant
from apps.audit.usage_csv import usage_csv
from apps.tenants.admin_scoping import ReadOnlyTenantAdmin


def pretty_json(value) -> str:
    return format_html("<pre class='mono'>{}</pre>", json.dumps(value, indent=2, sort_keys=True))


@admin.register(PolicyChange)
class PolicyChangeAdmin(ReadOnlyTenantAdmin):
    """The change history auditors read."""

    list_display = (
        "occurred_at",
        "actor_label",
        "action",
        "object_type",
        "object_repr",
        "fields_changed",
    )
    list_filter = ("action", "object_type")
    search_fields = ("object_repr", "object_id", "actor_label")
    date_hierarchy = "occurred_at"
    fields = (
        "occurred_at",
        "actor_label",
        "action",
        "object_type",
        "object_id",
        "object_repr",
        "before_json",
        "after_json",
    )
    readonly_fields = fields
    list_select_related = ("organization",)

    @admin.display(description="fields changed")
    def fields_changed(self, change):
        return ", ".join(change.changed_fields)

    @admin.display(description="before")
    def before_json(self, change):
        return pretty_json(change.before)

    @admin.display(description="after")
    def after_json(self, change):
        return pretty_json(change.after)


# --- grants: the changelist stays fast at millions of rows ------------------------------------

COUNT_CAP = 10_000


class CappedCountPaginator(Paginator):
    """Counts at most ``COUNT_CAP + 1`` matches: an exact COUNT(*) of millions of rows is
    what makes big changelists slow, and nobody pages past the ten-thousandth grant."""

    @cached_property
    def count(self) -> int:
        return self.object_list.order_by()[: COUNT_CAP + 1].count()


class ProbedDatesQuerySet(QuerySet):
    """The date hierarchy's ``datetimes()`` answered by one indexed EXISTS per candidate
    period instead of a DISTINCT over every matching row."""

    def datetimes(self, field_name, kind, order="ASC", tzinfo=None, is_dst=None):
        bounds = self.order_by(field_name).values_list(field_name, flat=True)
        first, last = bounds.first(), bounds.reverse().first()
        if first is None:
            return []
        first, last = timezone.localtime(first), timezone.localtime(last)
        found = []
        start = _period_start(first, kind)
        while start <= last:
            end = _period_next(start, kind)
            in_period = self.filter(**{f"{field_name}__gte": start, f"{field_name}__lt": end})
            # Not .exists(): it drops the ordering, and without it PostgreSQL may pick a
            # sequential scan over every older row (135–376 ms a probe at a million grants).
            if in_period.order_by(field_name).values_list(field_name, flat=True)[:1]:
                found.append(start)
            start = end
        return found if order == "ASC" else found[::-1]


def _period_start(moment: datetime, kind: str) -> datetime:
    parts = {"year": (moment.year, 1, 1), "month": (moment.year, moment.month, 1)}
    year, month, day = parts.get(kind, (moment.year, moment.month, moment.day))
    return timezone.make_aware(datetime(year, month, day))


def _period_next(start: datetime, kind: str) -> datetime:
    if kind == "year":
        return start.replace(year=start.year + 1)
    if kind == "month":
        return (start + timedelta(days=32)).replace(day=1)
    return timezone.make_aware(
        datetime.combine(start.date() + timedelta(days=1), datetime.min.time())
    )


# --- grants: the list an auditor reads ---------------------------------------------------------


def _cell(template: str, *args):
    """One wrapper per cell: on a phone each cell is a line of a card (static/ephemera/
    grants.css), which needs the cell's content in one box."""
    return format_html('<span class="cell">' + template + "</span>", *args)


_NONE = mark_safe('<span class="cell none">—</span>')


def _moment(moment: datetime | None, *, css_class: str = ""):
    """A ``<time>`` in UTC with seconds; static/ephemera/local-time.js shows it in the
    viewer's own zone and keeps UTC on hover."""
    if moment is None:
        return _NONE
    utc = moment.astimezone(UTC)
    text = f"{utc:%Y-%m-%d %H:%M:%S} UTC"
    return _cell(
        '<time class="{}" datetime="{}" title="{}">{}</time>',
        css_class,
        utc.isoformat(timespec="seconds"),
        text,
        text,
    )


LIFECYCLE_SHORT = {
    TokenGrant.Lifecycle.ACTIVE: "Active",
    TokenGrant.Lifecycle.SESSION_WINDOW_CLOSED: "Window closed",
    TokenGrant.Lifecycle.EXPIRED: "Expired",
}


def _when(name: str):
    """A time on the grant's page as the list shows it: to the second, in the viewer's zone,
    UTC on hover."""

    @admin.display(description=TokenGrant._meta.get_field(name).verbose_name)
    def shown(self, grant):
        return _moment(getattr(grant, name))

    return shown


WHEN_FIELDS = (
    "requested_at_shown",
    "issued_at_shown",
    "new_session_expire_time_shown",
    "expire_time_shown",
    "session_window_closed_at_shown",
    "expired_at_shown",
)


@dataclass(frozen=True)
class FilterChip:
    """One active filter above the grants list, and the same list without it."""

    label: str
    remove_url: str


def filter_chips(changelist) -> list[FilterChip]:
    """The filters, date drill-down and search in force, read from the changelist's own
    parameters; each chip links to the same URL without its parameters (and page 1)."""
    params, chips = changelist.params, []
    if changelist.query:
        removed = changelist.get_query_string(remove=["q"])
        chips.append(FilterChip(f"Search: {changelist.query}", removed))
    for spec in changelist.filter_specs:
        names = [name for name in spec.expected_parameters() if name in params]
        if not names:
            continue
        if isinstance(spec, RequestedBetweenFilter):
            for name in names:
                label = f"Requested {name} {params[name]} (UTC)"
                chips.append(FilterChip(label, changelist.get_query_string(remove=[name])))
            continue
        choices = spec.choices(changelist)
        shown = [str(choice["display"]) for choice in choices if choice["selected"]]
        label = f"{str(spec.title).capitalize()}: {', '.join(shown) or params[names[0]]}"
        chips.append(FilterChip(label, changelist.get_query_string(remove=names)))
    if changelist.date_hierarchy:
        field = changelist.date_hierarchy
        names = [f"{field}__{part}" for part in ("year", "month", "day")]
        parts = [params[name] for name in names if name in params]
        if parts:
            label = f"Requested in {'-'.join(part.zfill(2) for part in parts)}"
            chips.append(FilterChip(label, changelist.get_query_string(remove=[f"{field}__"])))
    return chips


@admin.register(TokenGrant)
class TokenGrantAdmin(ReadOnlyTenantAdmin):
    """Every attempt to get a token: filters, prefix searches, exports, lookup by token."""

    list_display = (
        "when",
        "outcome_label",
        "app_name",
        "key_prefix",
        "profile_label",
        "end_user_label",
        "expires",
        "error_label",
        "short_id",
    )
    list_display_links = ("when", "short_id")
    sortable_by = ("when",)
    list_filter = (
        ClientAppFilter,
        ProfileFilter,
        "outcome",
        "lifecycle",
        RequestedBetweenFilter,
        DashboardSelectionFilter,  # what the dashboard's links narrow to (hours, key, end user)
    )
    search_fields = ("end_user",)  # see get_search_results: prefix matches, indexed
    search_help_text = (
        "The start of an end user or key prefix (any case), a request id or a grant id."
    )
    date_hierarchy = "requested_at"
    list_select_related = ("client_app", "organization")
    show_full_result_count = False
    paginator = CappedCountPaginator
    change_list_template = "admin/audit/tokengrant/change_list.html"
    fieldsets = (
        (None, {"fields": ("public_id", "outcome", "error_code", "detail", "lifecycle")}),
        (
            "Who asked",
            {
                "fields": (
                    "client_app",
                    "client_key_prefix",
                    "member",
                    "end_user",
                    "request_id",
                    "ip",
                    "user_agent",
                )
            },
        ),
        (
            "What was granted",
            {
                "fields": (
                    "profile_slug",
                    "profile_version",
                    "requested_json",
                    "request_body_json",
                    "uses",
                    "upstream_latency_ms",
                    "token_fingerprint",
                )
            },
        ),
        ("When", {"fields": WHEN_FIELDS}),
    )

    class Media:
        css = {"all": ["ephemera/grants.css"]}
        js = ["ephemera/local-time.js"]

    def get_readonly_fields(self, request, obj=None):
        return [name for _, options in self.fieldsets for name in options["fields"]]

    requested_at_shown = _when("requested_at")
    issued_at_shown = _when("issued_at")
    new_session_expire_time_shown = _when("new_session_expire_time")
    expire_time_shown = _when("expire_time")
    session_window_closed_at_shown = _when("session_window_closed_at")
    expired_at_shown = _when("expired_at")

    # --- the list's columns -----------------------------------------------------------

    @admin.display(description="time", ordering="requested_at")
    def when(self, grant):
        return _moment(grant.requested_at)

    @admin.display(description="outcome")
    def outcome_label(self, grant):
        lifecycle = LIFECYCLE_SHORT.get(grant.lifecycle, "")
        return _cell(
            '<span class="outcome outcome-{}">{}</span>{}',
            grant.outcome,
            grant.get_outcome_display(),
            format_html(' <span class="lifecycle">{}</span>', lifecycle) if lifecycle else "",
        )

    @admin.display(description="app")
    def app_name(self, grant):
        if grant.client_app is not None:
            return _cell('<span class="app" title="{}">{}</span>', *[grant.client_app.name] * 2)
        return _cell("{}", "(deleted app)") if grant.client_key_prefix else _NONE

    @admin.display(description="key")
    def key_prefix(self, grant):
        if not grant.client_key_prefix:
            return _NONE
        return _cell("<code>{}</code>", grant.client_key_prefix)

    @admin.display(description="profile")
    def profile_label(self, grant):
        if not grant.profile_slug:
            return _NONE
        version = f"@{grant.profile_version}" if grant.profile_version is not None else ""
        return _cell('{}<span class="profile-version">{}</span>', grant.profile_slug, version)

    @admin.display(description="end user")
    def end_user_label(self, grant):
        if not grant.end_user:
            return _NONE
        return _cell('<span class="end-user" title="{}">{}</span>', *[grant.end_user] * 2)

    @admin.display(description="expires")
    def expires(self, grant):
        if grant.expire_time is None:
            return _NONE
        past = grant.expire_time <= timezone.now()
        return _moment(grant.expire_time, css_class="expires is-past" if past else "expires")

    @admin.display(description="error")
    def error_label(self, grant):
        return _cell("<code>{}</code>", grant.error_code) if grant.error_code else _NONE

    @admin.display(description="grant id")
    def short_id(self, grant):
        full = str(grant.public_id)
        return _cell('<code title="{}">{}</code>', full, full[:8])

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        changelist = (getattr(response, "context_data", None) or {}).get("cl")
        if changelist is not None:
            response.context_data["filter_chips"] = filter_chips(changelist)
        return response

    @admin.display(description="overrides asked for")
    def requested_json(self, grant):
        return pretty_json(grant.requested)

    @admin.display(description="body sent to Google")
    def request_body_json(self, grant):
        return pretty_json(grant.request_body)

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        queryset.__class__ = ProbedDatesQuerySet
        return queryset

    def get_search_results(self, request, queryset, search_term):
        condition = selectors.grant_search_condition(search_term)
        if condition is None:
            return queryset, False
        ids = selectors.grant_search_ids(queryset, search_term, cap=COUNT_CAP)
        return queryset.filter(condition if ids is None else Q(pk__in=ids)), False

    # --- the auditor's own pages ------------------------------------------------------

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("dashboard/", view(self.dashboard_view), name="audit_tokengrant_dashboard"),
            path("usage/", view(self.usage_view), name="audit_tokengrant_usage"),
            path(
                "lookup/",
                view(require_http_methods(["GET", "POST"])(self.lookup_view)),
                name="audit_tokengrant_lookup",
            ),
            *(
                path(
                    f"export.{fmt}",
                    view(partial(self.export_view, fmt=fmt)),
                    name=f"audit_tokengrant_export_{fmt}",
                )
                for fmt in ("csv", "jsonl")
            ),
            *super().get_urls(),
        ]

    def _organization_for_page(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        return request.tenant.organization

    def _page(self, request, template, title, **context):
        return TemplateResponse(
            request,
            template,
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": title,
                "organization": request.tenant.organization,
                **context,
            },
        )

    def lookup_view(self, request):
        """Paste a token (POST, so it never lands in a URL or an access log) or fingerprint.

        With no match the page comes back with what was typed still in the box, to correct
        rather than paste again; it is never logged, put in a URL or in the message.
        """
        organization = self._organization_for_page(request)
        pasted = ""
        if request.method == "POST" and organization is not None:
            pasted = request.POST.get("token", "")[:4096]
            grant = selectors.grant_by_token(organization=organization, token_or_fingerprint=pasted)
            if grant is not None:
                return HttpResponseRedirect(
                    reverse("admin:audit_tokengrant_change", args=[grant.pk])
                )
            messages.warning(request, f"No grant of {organization} matches that token.")
        return self._page(
            request, "admin/audit/tokengrant/lookup.html", "Look up a token", pasted=pasted
        )

    def export_view(self, request, fmt):
        """The changelist's filtered set, streamed as CSV or JSON lines.

        The changelist checks the parameters first (``TenantScopedAdmin``): a refused one
        is a 400 that says why, before the first byte of a 200 could be sent.
        """
        self._organization_for_page(request)
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters as error:
            message = getattr(error, "message", "These filters are not valid.")
            return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")
        queryset = changelist.get_queryset(request)
        streaming = hasattr(request, "scope")  # ASGI: hand Django an async iterator
        lines = (
            exports.grant_export_lines_async(queryset, fmt)
            if streaming
            else exports.grant_export_lines(queryset, fmt)
        )
        content_type = "text/csv" if fmt == "csv" else "application/x-ndjson"
        response = StreamingHttpResponse(lines, content_type=f"{content_type}; charset=utf-8")
        slug = getattr(request.tenant.organization, "slug", "all")
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        response["Content-Disposition"] = f'attachment; filename="grants-{slug}-{stamp}.{fmt}"'
        return response

    def usage_view(self, request):
        """Finance's export: a date range (and maybe one app or profile) → a CSV download,
        the same numbers as ``GET /api/v1/usage`` (apps/audit/api.py)."""
        organization = self._organization_for_page(request)
        form = None
        if organization is not None:
            form = UsageExportForm(
                request.GET if "first" in request.GET else None,
                organization=organization,
                initial=UsageExportForm.initial_range(),
            )
            if form.is_valid():
                data = form.cleaned_data
                report = selectors.usage_report(
                    organization=organization,
                    first=data["first"],
                    last=data["last"],
                    client_app=data["app"],
                    profile=data["profile"],
                )
                response = HttpResponse(usage_csv(report), content_type="text/csv; charset=utf-8")
                name = f"usage-{organization.slug}-{report.first}-{report.last}.csv"
                response["Content-Disposition"] = f'attachment; filename="{name}"'
                return response
        return self._page(request, "admin/audit/tokengrant/usage.html", "Usage export", form=form)

    def dashboard_view(self, request):
        """Counts up to now for a range (``?range=24h|7d|30d|90d``), each linked to its grants;
        ``?all=<breakdown>`` lifts that table's top-N limit."""
        organization = self._organization_for_page(request)
        context = {}
        if organization is not None:
            context = dashboard.dashboard_context(
                organization=organization,
                now=timezone.now(),
                range_name=request.GET.get("range", ""),
                show_all=request.GET.get("all", ""),
            )
        return self._page(
            request, "admin/audit/tokengrant/dashboard.html", "Issuance dashboard", **context
        )


@admin.register(AuditSeal)
class AuditSealAdmin(ReadOnlyTenantAdmin):
    list_display = (
        "sequence",
        "sealed_at",
        "grant_count",
        "change_count",
        "short_hash",
        "grants_purged_at",
    )
    list_filter = (("grants_purged_at", admin.EmptyFieldListFilter),)
    search_fields = ("hash",)
    date_hierarchy = "sealed_at"
    fields = (
        "sequence",
        "sealed_at",
        "prev_hash",
        "hash",
        "grants_root",
        "changes_root",
        "grant_count",
        "grants_after_id",
        "grants_through_id",
        "change_count",
        "changes_after_id",
        "changes_through_id",
        "grants_purged_at",
    )
    readonly_fields = fields

    @admin.display(description="hash")
    def short_hash(self, seal):
        return f"{seal.hash[:16]}…"


@admin.register(CleanupRun)
class CleanupRunAdmin(ReadOnlyTenantAdmin):
    list_display = ("task", "started_at", "duration", "counts_text", "error")
    list_filter = ("task",)
    date_hierarchy = "started_at"
    fields = ("task", "started_at", "finished_at", "counts_text", "error")
    readonly_fields = fields

    @admin.display(description="duration (ms)")
    def duration(self, run):
        return run.duration_ms

    @admin.display(description="counts")
    def counts_text(self, run):
        return ", ".join(f"{name}: {count}" for name, count in sorted(run.counts.items())) or "—"
