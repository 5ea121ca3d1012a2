from datetime import timedelta

from django import forms
from django.utils import timezone

from apps.clients.models import ClientApp, ClientKey


class OriginsField(forms.CharField):
    """Origins typed one per line; stored as a JSON list."""

    widget = forms.Textarea(attrs={"rows": 3, "cols": 60})

    def prepare_value(self, value):
        if isinstance(value, list | tuple):
            return "\n".join(value)
        return value

    def to_python(self, value):
        text = super().to_python(value)
        return [line.strip().rstrip("/") for line in text.splitlines() if line.strip()]


class ClientAppForm(forms.ModelForm):
    allowed_origins = OriginsField(
        required=False,
        help_text="One origin per line, e.g. https://app.example.com. Empty: no browser access.",
    )

    class Meta:
        model = ClientApp
        fields = ("name", "description", "allowed_profiles", "allowed_origins", "is_active")


GRACE_CHOICES = (
    (0, "Stop the old key now"),
    (3600, "1 hour"),
    (86400, "24 hours"),
    (7 * 86400, "7 days"),
    (30 * 86400, "30 days"),
)


LABEL_HELP = "Where the key is used, e.g. “production backend”: it names the key in lists."


class KeyRotateForm(forms.Form):
    grace_seconds = forms.TypedChoiceField(
        choices=GRACE_CHOICES,
        coerce=int,
        initial=86400,
        label="The old key keeps working for",
    )
    label = forms.CharField(
        max_length=100,
        required=False,
        label="Label of the new key",
        help_text="Empty: the old key's label.",
    )

    def grace_until(self):
        return timezone.now() + timedelta(seconds=self.cleaned_data["grace_seconds"])


class KeyCreateForm(forms.Form):
    label = forms.CharField(max_length=100, help_text=LABEL_HELP)
    # Absent from the POST (an older page): an issue key, as every key was before scopes.
    scope = forms.TypedChoiceField(
        choices=ClientKey.Scope.choices,
        required=False,
        empty_value=ClientKey.Scope.ISSUE,
        label="The key may",
        help_text="Issue tokens, or read the organisation's usage (GET /api/v1/usage). Never both.",
    )

    def clean_label(self) -> str:
        return self.cleaned_data["label"].strip()
