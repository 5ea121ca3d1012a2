"""The auditor's usage export form (the admin's "Usage export" page)."""

from datetime import UTC, timedelta

from django import forms
from django.utils import timezone

from apps.audit.selectors import USAGE_MAX_DAYS
from apps.clients.models import ClientApp
from apps.policies.models import LiveConstraintProfile
from apps.tenants.models import Organization


class UsageExportForm(forms.Form):
    """A UTC date range (at most ``USAGE_MAX_DAYS`` days), and optionally one app or profile
    of the organisation; the choices hold that organisation's only."""

    first = forms.DateField(label="From (UTC day)", widget=forms.DateInput(attrs={"type": "date"}))
    last = forms.DateField(label="To (UTC day)", widget=forms.DateInput(attrs={"type": "date"}))
    app = forms.ModelChoiceField(
        queryset=ClientApp.objects.none(), required=False, empty_label="All apps"
    )
    profile = forms.ModelChoiceField(
        queryset=LiveConstraintProfile.objects.none(),
        required=False,
        empty_label="All profiles",
        to_field_name="slug",
    )

    def __init__(self, *args, organization: Organization, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["app"].queryset = ClientApp.objects.filter(organization=organization)
        self.fields["profile"].queryset = LiveConstraintProfile.objects.filter(
            organization=organization
        )

    @staticmethod
    def initial_range() -> dict:
        """The last 30 UTC days, today included."""
        today = timezone.now().astimezone(UTC).date()
        return {"first": today - timedelta(days=29), "last": today}

    def clean(self) -> dict:
        cleaned = super().clean()
        first, last = cleaned.get("first"), cleaned.get("last")
        if first and last:
            if last < first:
                self.add_error("last", "The last day is before the first.")
            elif last - first >= timedelta(days=USAGE_MAX_DAYS):
                self.add_error("last", f"A range is at most {USAGE_MAX_DAYS} days.")
        return cleaned
