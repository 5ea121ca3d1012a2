from django import forms
from django.conf import settings
from django.forms import BaseModelFormSet

from apps.policies import services
from apps.policies.live_schema import lockable_field_names
from apps.tenants.models import Organization, User


class CommaSeparatedListField(forms.CharField):
    """A short list of names typed as ``a, b, c``; stored as a JSON list."""

    def prepare_value(self, value):
        if isinstance(value, list | tuple):
            return ", ".join(value)
        return value

    def to_python(self, value):
        text = super().to_python(value)
        return [item.strip() for item in text.split(",") if item.strip()]


class LiveConstraintProfileForm(forms.ModelForm):
    model = forms.ChoiceField(choices=(), help_text="Live-capable models allowed on this platform.")
    config = forms.JSONField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 12, "cols": 80, "class": "vLargeTextField mono"}),
        help_text=(
            'LiveConnectConfig as JSON, e.g. {"response_modalities": ["AUDIO"], '
            '"temperature": 0.7, "system_instruction": "You are a helpful tutor."}'
        ),
    )
    lock_additional_fields = CommaSeparatedListField(
        required=False,
        help_text="With 'plus the listed fields': comma-separated names, e.g. temperature, tools",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].choices = [(name, name) for name in settings.GEMINI_LIVE_MODELS]
        self.fields["lock_additional_fields"].help_text += (
            ". Lockable: " + ", ".join(sorted(lockable_field_names())) + "."
        )

    def clean_config(self):
        return self.cleaned_data.get("config") or {}


def quota_formset_save(
    formset: BaseModelFormSet, *, organization: Organization, actor: User
) -> None:
    """Quota rows edited inline on a profile or app page go through the quota services, so
    each is scoped to the organisation and audited like any other quota change."""
    changed = formset.save(commit=False)  # this is what fills formset.deleted_objects
    for quota in formset.deleted_objects:
        services.quota_delete(organization=organization, quota=quota, actor=actor)
    for quota in changed:
        fields = {name: getattr(quota, name) for name in services.QUOTA_FIELDS}
        if quota.pk is None:
            services.quota_create(organization=organization, actor=actor, **fields)
        else:
            services.quota_update(organization=organization, quota=quota, actor=actor, **fields)
