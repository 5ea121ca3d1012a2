"""Changelist filters that stay fast on millions of grants and list only the org's own rows.

Django's related filters list ``DISTINCT`` values of the grants table (a scan) and would
name other organisations' rows; these list the active organisation's apps and profiles.

A value that is not one the filter could have offered (an id in other digits than 0-9, one
out of range, a date that does not exist) is the admin's "invalid filter" answer, never a
query: ``InvalidChangelistParameters`` says which filter and why.
"""

import re
from datetime import UTC, datetime, time, timedelta

from django.contrib import admin
from django.core.exceptions import ValidationError
from django.utils.dateparse import parse_date

from apps.clients.models import ClientApp
from apps.policies.models import LiveConstraintProfile
from apps.tenants.admin_scoping import INVALID_FILTERS, InvalidChangelistParameters

# A primary key as the filter's own links write it: ASCII digits within a bigint. ``isdigit``
# would pass "²" (which ``int`` refuses) and "٣" (which it reads as 3).
ROW_ID = re.compile(r"[0-9]{1,19}")
BIGINT_MAX = 2**63 - 1


class _OrganizationRowsFilter(admin.SimpleListFilter):
    model = None
    field = ""

    def lookups(self, request, model_admin):
        organization = request.tenant.organization
        if organization is None:
            return []
        rows = self.model.objects.filter(organization=organization).order_by("name")
        return [(str(pk), name) for pk, name in rows.values_list("pk", "name")]

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        if not ROW_ID.fullmatch(value) or int(value) > BIGINT_MAX:
            raise InvalidChangelistParameters(
                f"{INVALID_FILTERS} “{self.parameter_name}” takes one of the listed {self.title}s."
            )
        return queryset.filter(**{f"{self.field}_id": int(value)})


class ClientAppFilter(_OrganizationRowsFilter):
    title = "client app"
    parameter_name = "app"
    model = ClientApp
    field = "client_app"


class ProfileFilter(_OrganizationRowsFilter):
    title = "profile"
    parameter_name = "profile"
    model = LiveConstraintProfile
    field = "profile"


class RequestedBetweenFilter(admin.ListFilter):
    """``from`` / ``to`` dates (UTC, both inclusive) on ``requested_at``."""

    title = "requested between (UTC)"
    template = "admin/audit/date_range_filter.html"
    parameters = ("from", "to")

    def __init__(self, request, params, model, model_admin):
        super().__init__(request, params, model, model_admin)
        self.values = {}
        for name in self.parameters:
            if name in params:
                raw = params.pop(name)
                raw = raw[-1] if isinstance(raw, list) else raw
                self.values[name] = self._date(name, raw) if raw else None

    @staticmethod
    def _date(name: str, raw: str):
        """A calendar date, or the invalid-filter answer: ``parse_date`` returns None for
        what is not shaped like a date and raises for a shaped one that does not exist
        (2026-02-30, 2026-13-01)."""
        try:
            parsed = parse_date(raw)
        except ValueError:
            parsed = None
        if parsed is None:
            raise InvalidChangelistParameters(
                f"{INVALID_FILTERS} “{name}” takes a date that exists, as YYYY-MM-DD."
            )
        return parsed

    def has_output(self):
        return True

    def expected_parameters(self):
        return list(self.parameters)

    def choices(self, changelist):
        yield {
            "from": self.values.get("from") or "",
            "to": self.values.get("to") or "",
            "query_parts": [
                (key, value)
                for key, value in changelist.params.items()
                if key not in self.parameters and key != "p"
            ],
            "clear": changelist.get_query_string(remove=list(self.parameters)),
        }

    def queryset(self, request, queryset):
        try:
            if start := self.values.get("from"):
                queryset = queryset.filter(requested_at__gte=datetime.combine(start, time(), UTC))
            if end := self.values.get("to"):
                end_at = datetime.combine(end + timedelta(days=1), time(), UTC)
                queryset = queryset.filter(requested_at__lt=end_at)
        except (OverflowError, ValidationError) as error:
            raise InvalidChangelistParameters(
                f"{INVALID_FILTERS} The dates are out of range."
            ) from error
        return queryset
