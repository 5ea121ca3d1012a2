"""The profile form: the settings admins set most as fields, everything else as JSON.

The form and the Advanced JSON are two views of one stored ``config`` (the SDK's
LiveConnectConfig, snake_case); ``split_config`` and ``LiveConstraintProfileForm.clean`` go
from one to the other without losing anything. Every refusal lives in the model's ``clean``
(``live_schema``), so the admin, the services and the preview all refuse the same things.
"""

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.forms import BaseModelFormSet
from django.forms.fields import InvalidJSONInput
from django.forms.utils import ErrorDict

from apps.policies import services
from apps.policies.live_schema import (
    LIVE_LANGUAGES,
    LIVE_VOICES,
    RESPONSE_MODALITIES,
    LiveConfigError,
    lockable_field_names,
    validate_live_config,
)
from apps.policies.models import LiveConstraintProfile
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


class AdvancedJSONField(forms.JSONField):
    """The rest of the LiveConnectConfig as an indented JSON object; empty means none."""

    def prepare_value(self, value):
        if isinstance(value, InvalidJSONInput):
            return value
        if value in (None, {}):
            return ""
        return json.dumps(value, indent=2, ensure_ascii=False)

    def to_python(self, value):
        parsed = super().to_python(value)
        if parsed is None:
            return {}
        if not isinstance(parsed, dict):
            raise ValidationError('Must be a JSON object, such as {"seed": 7}.')
        return parsed


# --- the form fields that stand for parts of the config ---------------------------------------

Path = tuple[str, ...]
_MISSING = object()
VOICE_NAMES = frozenset(name for name, _ in LIVE_VOICES)
LANGUAGE_CODES = frozenset(code for code, _ in LIVE_LANGUAGES)


def _get(config: dict[str, Any], path: Path) -> Any:
    value: Any = config
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _pop(config: dict[str, Any], path: Path) -> None:
    """Remove a leaf, and the objects that held nothing else (merging puts them back)."""
    *parents, leaf = path
    chain = [config]
    for part in parents:
        chain.append(chain[-1][part])
    del chain[-1][leaf]
    for holder, part in zip(reversed(chain[:-1]), reversed(parents), strict=True):
        if holder[part]:
            break
        del holder[part]


def _set(config: dict[str, Any], path: Path, value: Any) -> None:
    *parents, leaf = path
    holder = config
    for part in parents:
        holder = holder.setdefault(part, {})
    holder[leaf] = value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class ConfigField:
    """One form field standing for one place in the config.

    ``shows`` says whether a stored value has a shape the field can show; one it cannot
    (``top_k`` of 2.5, a Content object as system instruction) stays in the Advanced JSON, so
    JSON → form → JSON loses nothing.
    """

    name: str
    path: Path
    shows: Callable[[Any], bool]
    to_form: Callable[[Any], Any] = lambda value: value
    to_config: Callable[[Any], Any] = lambda value: value


def _on(value: Any) -> Any:
    """A ticked box sets an empty object (the feature with Google's defaults)."""
    return {} if value else None


def _shown_on(value: Any) -> bool:
    return True


CONFIG_FIELDS: tuple[ConfigField, ...] = (
    ConfigField(
        "response_modality",
        ("response_modalities",),
        lambda v: isinstance(v, list) and len(v) == 1 and v[0] in RESPONSE_MODALITIES,
        to_form=lambda v: v[0],
        to_config=lambda v: [v] if v else None,
    ),
    ConfigField(
        "voice",
        ("speech_config", "voice_config", "prebuilt_voice_config", "voice_name"),
        lambda v: v in VOICE_NAMES,
        to_config=lambda v: v or None,
    ),
    ConfigField(
        "language",
        ("speech_config", "language_code"),
        lambda v: v in LANGUAGE_CODES,
        to_config=lambda v: v or None,
    ),
    ConfigField(
        "system_instruction",
        ("system_instruction",),
        lambda v: isinstance(v, str) and v.strip() != "" and "\r" not in v,
        to_config=lambda v: v.replace("\r\n", "\n") if v and v.strip() else None,
    ),
    ConfigField("temperature", ("temperature",), _is_number),
    ConfigField("top_p", ("top_p",), _is_number),
    ConfigField(
        "top_k",
        ("top_k",),
        lambda v: _is_number(v) and float(v).is_integer(),
        to_form=lambda v: int(v),
    ),
    ConfigField(
        "max_output_tokens", ("max_output_tokens",), lambda v: _is_number(v) and v == int(v)
    ),
    ConfigField("session_resumption", ("session_resumption",), lambda v: v == {}, _shown_on, _on),
    ConfigField(
        "sliding_window",
        ("context_window_compression", "sliding_window"),
        lambda v: v == {},
        _shown_on,
        _on,
    ),
    ConfigField(
        "trigger_tokens",
        ("context_window_compression", "trigger_tokens"),
        lambda v: _is_number(v) and v == int(v),
    ),
    ConfigField(
        "input_audio_transcription",
        ("input_audio_transcription",),
        lambda v: v == {},
        _shown_on,
        _on,
    ),
    ConfigField(
        "output_audio_transcription",
        ("output_audio_transcription",),
        lambda v: v == {},
        _shown_on,
        _on,
    ),
)
CONFIG_FIELD_NAMES = tuple(field.name for field in CONFIG_FIELDS)


def split_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A stored config as (form field values, the Advanced JSON left over)."""
    rest = copy.deepcopy(config or {})
    values: dict[str, Any] = {}
    for field in CONFIG_FIELDS:
        value = _get(rest, field.path)
        if value is not _MISSING and field.shows(value):
            values[field.name] = field.to_form(value)
            _pop(rest, field.path)
    return values, rest


def _dotted(path: Path) -> str:
    return ".".join(path)


class LiveConstraintProfileForm(forms.ModelForm):
    model = forms.ChoiceField(
        choices=(), help_text="The Live model the token is for; clients cannot pick another."
    )
    response_modality = forms.ChoiceField(
        required=False,
        widget=forms.RadioSelect,
        choices=(
            ("", "The model's default"),
            ("AUDIO", "Audio: the model speaks"),
            ("TEXT", "Text: the model writes"),
        ),
        help_text="A Live session answers in exactly one modality.",
    )
    voice = forms.ChoiceField(
        required=False,
        choices=(),
        help_text="One of Google's prebuilt voices, for audio answers.",
    )
    language = forms.ChoiceField(
        required=False,
        choices=(),
        help_text="The language the model speaks and hears (BCP-47 code).",
    )
    system_instruction = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 5, "class": "vLargeTextField"}),
        help_text="Who the model is and how it behaves, in plain words. Sent as the setup's "
        "systemInstruction.",
    )
    temperature = forms.FloatField(
        required=False,
        min_value=0,
        max_value=2,
        widget=forms.NumberInput(attrs={"step": "0.05"}),
        help_text="0 to 2; lower is more predictable.",
    )
    top_p = forms.FloatField(
        required=False,
        min_value=0,
        max_value=1,
        label="Top-p",
        widget=forms.NumberInput(attrs={"step": "0.05"}),
        help_text="0 to 1: sample from the most likely tokens whose probabilities add up to this.",
    )
    top_k = forms.IntegerField(
        required=False,
        min_value=1,
        label="Top-k",
        help_text="1 or more: sample from this many most likely tokens.",
    )
    max_output_tokens = forms.IntegerField(
        required=False, min_value=1, help_text="1 or more: the longest answer, in tokens."
    )
    session_resumption = forms.BooleanField(
        required=False,
        help_text="Clients may resume a dropped session (Google ends connections about every "
        "10 minutes); resuming does not count as a use.",
    )
    sliding_window = forms.BooleanField(
        required=False,
        label="Context window compression",
        help_text="Drop the oldest turns when the context fills up, so sessions can run long.",
    )
    trigger_tokens = forms.IntegerField(
        required=False,
        min_value=1,
        label="Compress at (tokens)",
        help_text="With compression: how full the context gets before it is compressed. Empty: "
        "Google's default.",
    )
    input_audio_transcription = forms.BooleanField(
        required=False,
        label="Transcribe what the user says",
        help_text="The session also sends the text of the user's speech.",
    )
    output_audio_transcription = forms.BooleanField(
        required=False,
        label="Transcribe what the model says",
        help_text="The session also sends the text of the model's speech.",
    )
    config = AdvancedJSONField(
        required=False,
        label="Advanced (JSON)",
        widget=forms.Textarea(attrs={"rows": 8, "class": "vLargeTextField mono"}),
        help_text=(
            "Any other LiveConnectConfig setting, as a JSON object (snake_case or camelCase), "
            'e.g. {"tools": [{"google_search": {}}], "realtime_input_config": '
            '{"automatic_activity_detection": {"disabled": true}}}. A setting the fields above '
            "also set belongs in one place only."
        ),
    )
    lock_additional_fields = CommaSeparatedListField(
        required=False,
        help_text="With 'plus the listed fields': comma-separated names, e.g. temperature, tools",
    )

    stored_problems = False  # set when the saved profile breaks today's rules

    class Meta:
        model = LiveConstraintProfile
        fields = services.PROFILE_EDITABLE_FIELDS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        models = list(settings.GEMINI_LIVE_MODELS)
        stored = self.instance.model
        choices = {
            "model": [(name, name) for name in models],
            "voice": [("", "The model's default")]
            + [(name, f"{name} ({character})") for name, character in LIVE_VOICES],
            "language": [("", "The model's default")]
            + [(code, f"{label} · {code}") for code, label in LIVE_LANGUAGES],
        }
        if stored and stored not in models:  # kept as it is until someone picks another
            choices["model"].insert(0, (stored, f"{stored} (kept: no longer offered)"))
        for name, options in choices.items():
            if name in self.fields:
                self.fields[name].choices = options
        if "lock_additional_fields" in self.fields:
            self.fields["lock_additional_fields"].help_text += (
                ". Lockable: " + ", ".join(sorted(lockable_field_names())) + "."
            )
        values, rest = split_config(self.instance.config if self.instance.pk else {})
        self.initial.update(values)
        self.initial["config"] = rest
        if not self.is_bound and self.instance.pk:
            self._show_stored_problems()

    def _show_stored_problems(self) -> None:
        """A profile saved before today's rules may break them: say so as the page opens.

        It keeps issuing as saved (Google has the last word); saving it needs the fix.
        """
        try:
            copy.copy(self.instance).clean()
        except ValidationError as error:
            self.stored_problems = True
            self._errors = ErrorDict()
            self.cleaned_data = {}
            for field, messages in error.message_dict.items():
                target = field if field in self.fields else None
                for message in messages:
                    shown = (
                        message if target or field == NON_FIELD_ERRORS else f"{field}: {message}"
                    )
                    self.add_error(target, shown)
            del self.cleaned_data

    def clean(self):
        cleaned = super().clean()
        advanced = cleaned.get("config")
        if advanced is None:  # the JSON itself did not parse
            return cleaned
        try:
            config = validate_live_config(advanced)
        except LiveConfigError as error:
            for message in error.messages:
                self.add_error("config", message)
            cleaned.pop("config", None)
            return cleaned
        for field in CONFIG_FIELDS:
            if field.name not in self.fields or field.name in self.errors:
                continue
            value = field.to_config(cleaned.get(field.name))
            if value is None:
                continue
            if _get(config, field.path) is not _MISSING:
                label = self.fields[field.name].label or field.name.replace("_", " ").capitalize()
                self.add_error(
                    "config",
                    f"{_dotted(field.path)}: the {label} field sets this too; keep it in one "
                    "place.",
                )
                continue
            _set(config, field.path, value)
        trigger = cleaned.get("trigger_tokens")
        compression = config.get("context_window_compression") or {}
        if trigger is not None and "sliding_window" not in compression:
            self.add_error(
                "trigger_tokens", "Only with context window compression on: turn it on too."
            )
        cleaned["config"] = config
        return cleaned


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
