"""The grants list narrowed the way a dashboard link asks: exactly the grants a number counts.

The page's own filters cover apps, profiles, one outcome and whole days. A dashboard bar is an
hour, a row is one key or one end user (exact, where the search box matches by prefix), a
card is an outcome group or the tokens live now; these parameters say that:

- ``hour=YYYY-MM-DDTHH`` (UTC) and ``hours=N`` (default 1): asked for in those hours;
- ``key_prefix=…`` and ``end_user=…``: exactly that key prefix or end user;
- ``outcomes=issued|denied|errors``: the dashboard's columns (denied by quota or policy;
  upstream errors and abandoned);
- ``live=1``: issued tokens not yet expired, at the moment the list is read.

Each is read from an index: the hours as a range of ``(organization, -requested_at)``, the end
user and key prefix through their upper-case search indexes (with the exact value rechecked).
"""

from datetime import UTC, datetime, timedelta

from django.contrib import admin
from django.utils import timezone

from apps.audit.models import TokenGrant
from apps.tenants.admin_scoping import INVALID_FILTERS, InvalidChangelistParameters

OUTCOME_GROUPS = {
    "issued": (TokenGrant.Outcome.ISSUED,),
    "denied": (TokenGrant.Outcome.DENIED_QUOTA, TokenGrant.Outcome.DENIED_POLICY),
    "errors": (TokenGrant.Outcome.UPSTREAM_ERROR, TokenGrant.Outcome.ABANDONED),
}
OUTCOME_GROUP_NAMES = {
    "issued": "issued",
    "denied": "denied (quota or policy)",
    "errors": "upstream errors and abandoned",
}
HOUR_FORMAT = "%Y-%m-%dT%H"
MAX_HOURS = 24 * 100
MAX_LENGTHS = {"key_prefix": 16, "end_user": 200}
# The grant column each exact parameter matches.
EXACT_FIELDS = {"key_prefix": "client_key_prefix", "end_user": "end_user"}


def _refuse(detail: str) -> InvalidChangelistParameters:
    return InvalidChangelistParameters(f"{INVALID_FILTERS} {detail}")


class DashboardSelectionFilter(admin.ListFilter):
    """Shown (with a way back to the whole list) only while one of its parameters is used."""

    title = "from the dashboard"
    template = "admin/audit/dashboard_selection_filter.html"
    parameters = ("hour", "hours", "key_prefix", "end_user", "outcomes", "live")

    def __init__(self, request, params, model, model_admin):
        super().__init__(request, params, model, model_admin)
        self.raw = {}
        for name in self.parameters:
            if name in params:
                value = params.pop(name)
                self.raw[name] = value[-1] if isinstance(value, list) else value
        self.start, self.end = self._hours()
        for name, longest in MAX_LENGTHS.items():
            if len(self.raw.get(name, "")) > longest:
                raise _refuse(f"“{name}” is at most {longest} characters.")
        self.outcomes = self.raw.get("outcomes")
        if self.outcomes is not None and self.outcomes not in OUTCOME_GROUPS:
            raise _refuse("“outcomes” is one of issued, denied or errors.")
        if self.raw.get("live") not in (None, "1"):
            raise _refuse("“live” is 1.")

    def _hours(self) -> tuple[datetime | None, datetime | None]:
        raw_hour, raw_count = self.raw.get("hour"), self.raw.get("hours")
        if raw_hour is None:
            if raw_count is not None:
                raise _refuse("“hours” needs an “hour” to start from.")
            return None, None
        try:
            start = datetime.strptime(raw_hour, HOUR_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            raise _refuse("“hour” is a UTC hour, as YYYY-MM-DDTHH.") from None
        count = 1
        if raw_count is not None:
            if not raw_count.isdigit() or not 1 <= int(raw_count) <= MAX_HOURS:
                raise _refuse(f"“hours” is a whole number from 1 to {MAX_HOURS}.")
            count = int(raw_count)
        return start, start + timedelta(hours=count)

    def has_output(self) -> bool:
        return bool(self.raw)

    def expected_parameters(self):
        return list(self.parameters)

    def _parts(self) -> list[tuple[str, list[str]]]:
        """Each restriction in words, and the parameters that make it."""
        parts = []
        if self.start is not None:
            last = self.end - timedelta(hours=1)
            span = (
                f"{self.start:%Y-%m-%d %H}:00–{self.end:%H}:00 UTC"
                if last == self.start
                else f"{self.start:%Y-%m-%d %H}:00 to {self.end:%Y-%m-%d %H}:00 UTC"
            )
            parts.append((span, ["hour", "hours"]))
        if "key_prefix" in self.raw:
            parts.append((f"key eph_{self.raw['key_prefix']}_…", ["key_prefix"]))
        if "end_user" in self.raw:
            parts.append((f"end user “{self.raw['end_user']}”", ["end_user"]))
        if self.outcomes:
            parts.append((OUTCOME_GROUP_NAMES[self.outcomes], ["outcomes"]))
        if "live" in self.raw:
            parts.append(("tokens live now", ["live"]))
        return parts

    def choices(self, changelist):
        for display, names in self._parts():
            yield {
                "selected": True,
                "display": display,
                "query_string": changelist.get_query_string(remove=names),
            }

    def queryset(self, request, queryset):
        if self.start is not None:
            queryset = queryset.filter(requested_at__gte=self.start, requested_at__lt=self.end)
        for name, field in EXACT_FIELDS.items():
            if name in self.raw:
                value = self.raw[name]
                # iexact reaches the upper-case search index; the exact match keeps it exact.
                queryset = queryset.filter(**{f"{field}__iexact": value, field: value})
        if self.outcomes:
            queryset = queryset.filter(outcome__in=OUTCOME_GROUPS[self.outcomes])
        if "live" in self.raw:
            queryset = queryset.filter(
                lifecycle__in=TokenGrant.LIVE_LIFECYCLES, expire_time__gt=timezone.now()
            )
        return queryset
