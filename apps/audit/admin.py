import json
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import HttpResponseBadRequest, HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.views.decorators.http import require_http_methods

from apps.audit import charts, exports, selectors
from apps.audit.admin_filters import ClientAppFilter, ProfileFilter, RequestedBetweenFilter
from apps.audit.models import AuditSeal, CleanupRun, PolicyChange, TokenGrant
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
            if self.filter(**{f"{field_name}__gte": start, f"{field_name}__lt": end}).exists():
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


@admin.register(TokenGrant)
class TokenGrantAdmin(ReadOnlyTenantAdmin):
    """Every attempt to get a token: filters, exact searches, exports, lookup by token."""

    list_display = (
        "requested_at",
        "public_id",
        "outcome",
        "lifecycle",
        "client_app",
        "profile_slug",
        "end_user",
        "error_code",
    )
    list_filter = (
        ClientAppFilter,
        ProfileFilter,
        "outcome",
        "lifecycle",
        RequestedBetweenFilter,
    )
    search_fields = ("end_user",)  # see get_search_results: exact matches, indexed
    search_help_text = "A grant id, an end user or a request id (exact)."
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
        (
            "When",
            {
                "fields": (
                    "requested_at",
                    "issued_at",
                    "new_session_expire_time",
                    "expire_time",
                    "session_window_closed_at",
                    "expired_at",
                )
            },
        ),
    )

    def get_readonly_fields(self, request, obj=None):
        return [name for _, options in self.fieldsets for name in options["fields"]]

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
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(public_id=uuid.UUID(term)), False
        except ValueError:
            return queryset.filter(Q(end_user=term) | Q(request_id=term)), False

    # --- the auditor's own pages ------------------------------------------------------

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("dashboard/", view(self.dashboard_view), name="audit_tokengrant_dashboard"),
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
        """Paste a token (POST, so it never lands in a URL or an access log) or fingerprint."""
        organization = self._organization_for_page(request)
        if request.method == "POST" and organization is not None:
            grant = selectors.grant_by_token(
                organization=organization,
                token_or_fingerprint=request.POST.get("token", "")[:4096],
            )
            if grant is not None:
                return HttpResponseRedirect(
                    reverse("admin:audit_tokengrant_change", args=[grant.pk])
                )
            messages.warning(request, f"No grant of {organization} matches that token.")
        return self._page(request, "admin/audit/tokengrant/lookup.html", "Look up a token")

    def export_view(self, request, fmt):
        """The changelist's filtered set, streamed as CSV or JSON lines."""
        self._organization_for_page(request)
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return HttpResponseBadRequest("These filters are not valid.")
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

    def dashboard_view(self, request):
        organization = self._organization_for_page(request)
        context = {}
        if organization is not None:
            now = timezone.now()
            today = now.astimezone(UTC).date()
            days = selectors.usage_by_day(organization=organization, days=30, today=today)
            context = {
                "days": days,
                "chart": charts.stacked_bars(days),
                "totals": {
                    "issued": sum(day.issued for day in days),
                    "denied": sum(day.denied for day in days),
                    "errors": sum(day.errors for day in days),
                },
                "active_now": selectors.tokens_active_count(organization=organization, now=now),
                "top_apps": selectors.usage_top(
                    organization=organization, by="client_app", since=days[0].day
                ),
                "top_profiles": selectors.usage_top(
                    organization=organization, by="profile", since=days[0].day
                ),
                "counted_through": selectors.usage_counted_through(organization=organization),
                "runs": selectors.cleanup_runs_latest(organization=organization),
                "seal": selectors.seal_latest(organization=organization),
            }
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
