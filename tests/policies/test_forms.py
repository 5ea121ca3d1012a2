"""The profile form: what it refuses (the validation table) and JSON → form → JSON."""

import json

import pytest
from google.genai import types

from apps.policies.forms import CONFIG_FIELDS, LiveConstraintProfileForm, split_config
from apps.policies.live_schema import FORBIDDEN_CONFIG_FIELDS, LIVE_VOICES, validate_live_config
from apps.policies.models import LiveConstraintProfile
from tests.factories import OrganizationFactory

pytestmark = pytest.mark.django_db

VOICE_LIST = ", ".join(name for name, _ in LIVE_VOICES)
LOCK_ADVICE = (
    "it reaches into a list of objects (field_mask is invalid for BidiGenerateContentSetup, "
    "js-genai #1492). Lock the whole setup instead."
)


@pytest.fixture
def organization():
    return OrganizationFactory(name="Forms Org", slug="forms-org")


def form_data(**overrides) -> dict[str, str]:
    data = {
        "slug": "tutor",
        "name": "Tutor",
        "description": "",
        "model": "gemini-2.0-flash-live-001",
        "response_modality": "",
        "voice": "",
        "language": "",
        "system_instruction": "",
        "config": "",
        "lock_mode": "whole_setup",
        "lock_additional_fields": "",
        "uses": "1",
        "expire_seconds": "600",
        "new_session_seconds": "60",
        "is_active": "on",
    }
    data.update(overrides)
    return {name: value for name, value in data.items() if value is not None}


def bound(organization, data, instance=None) -> LiveConstraintProfileForm:
    instance = instance or LiveConstraintProfile(organization=organization)
    return LiveConstraintProfileForm(data, instance=instance)


def advanced(config: dict) -> str:
    return json.dumps(config)


# --- the validation table: every refusal, with the field it names and its exact words --------

REFUSALS = {
    # response modality: exactly one, AUDIO or TEXT
    "two modalities in JSON": (
        {"config": advanced({"response_modalities": ["AUDIO", "TEXT"]})},
        "config",
        "response_modalities: name exactly one response modality, AUDIO or TEXT",
    ),
    "two modalities in generation_config": (
        {"config": advanced({"generation_config": {"response_modalities": ["TEXT", "AUDIO"]}})},
        "config",
        "generation_config.response_modalities: name exactly one response modality, AUDIO or TEXT",
    ),
    "no modality": (
        {"config": advanced({"response_modalities": []})},
        "config",
        "response_modalities: name exactly one response modality, AUDIO or TEXT",
    ),
    "VIDEO in JSON": (
        {"config": advanced({"response_modalities": ["VIDEO"]})},
        "config",
        "response_modalities[0]: VIDEO is not a Live response modality; choose AUDIO or TEXT",
    ),
    "IMAGE in JSON": (
        {"config": advanced({"responseModalities": ["IMAGE"]})},
        "config",
        "response_modalities[0]: IMAGE is not a Live response modality; choose AUDIO or TEXT",
    ),
    "VIDEO on the radio": (
        {"response_modality": "VIDEO"},
        "response_modality",
        "Select a valid choice. VIDEO is not one of the available choices.",
    ),
    # voices
    "unknown voice on the select": (
        {"voice": "Bob"},
        "voice",
        "Select a valid choice. Bob is not one of the available choices.",
    ),
    "unknown voice in JSON": (
        {
            "config": advanced(
                {
                    "speech_config": {
                        "voice_config": {"prebuilt_voice_config": {"voice_name": "Bob"}}
                    }
                }
            )
        },
        "config",
        "speech_config.voice_config.prebuilt_voice_config.voice_name: 'Bob' is not a prebuilt "
        f"voice; choose one of {VOICE_LIST}",
    ),
    "language that is no BCP-47 code": (
        {"config": advanced({"speech_config": {"language_code": "english"}})},
        "config",
        "speech_config.language_code: 'english' is not a BCP-47 language code such as en-US",
    ),
    "language off the list": (
        {"language": "xx-XX"},
        "language",
        "Select a valid choice. xx-XX is not one of the available choices.",
    ),
    # numbers out of range, on the fields and in the JSON
    "temperature above 2": (
        {"temperature": "2.5"},
        "temperature",
        "Ensure this value is less than or equal to 2.",
    ),
    "temperature below 0": (
        {"temperature": "-0.1"},
        "temperature",
        "Ensure this value is greater than or equal to 0.",
    ),
    "top-p above 1": ({"top_p": "1.5"}, "top_p", "Ensure this value is less than or equal to 1."),
    "top-k below 1": ({"top_k": "0"}, "top_k", "Ensure this value is greater than or equal to 1."),
    "max output tokens below 1": (
        {"max_output_tokens": "0"},
        "max_output_tokens",
        "Ensure this value is greater than or equal to 1.",
    ),
    "trigger tokens below 1": (
        {"sliding_window": "on", "trigger_tokens": "0"},
        "trigger_tokens",
        "Ensure this value is greater than or equal to 1.",
    ),
    "trigger tokens without compression": (
        {"trigger_tokens": "2000"},
        "trigger_tokens",
        "Only with context window compression on: turn it on too.",
    ),
    "temperature above 2 in JSON": (
        {"config": advanced({"temperature": 3})},
        "config",
        "temperature: must be ≤ 2",
    ),
    "top-p above 1 in JSON": ({"config": advanced({"top_p": 2})}, "config", "top_p: must be ≤ 1"),
    "top-k below 1 in JSON": ({"config": advanced({"top_k": 0})}, "config", "top_k: must be ≥ 1"),
    "top-k not whole in JSON": (
        {"config": advanced({"top_k": 1.5})},
        "config",
        "top_k: must be a whole number",
    ),
    "max output tokens beyond int32 in JSON": (
        {"config": advanced({"max_output_tokens": 10**12})},
        "config",
        "max_output_tokens: must be ≤ 2147483647",
    ),
    "NaN in JSON": (
        {"config": '{"temperature": NaN}'},
        "config",
        "temperature: must be a finite number",
    ),
    "Infinity deep in JSON": (
        {"config": '{"generation_config": {"top_p": Infinity}}'},
        "config",
        "generation_config.top_p: must be a finite number",
    ),
    "max output tokens below 1 in JSON": (
        {"config": advanced({"max_output_tokens": 0})},
        "config",
        "max_output_tokens: must be ≥ 1",
    ),
    # locks whose field mask Google refuses
    "fields-set lock over tools": (
        {"lock_mode": "fields_set", "config": advanced({"tools": [{"google_search": {}}]})},
        "lock_mode",
        f"Google refuses a lock on 'tools': {LOCK_ADVICE}",
    ),
    "fields-set lock over a system instruction": (
        {"lock_mode": "fields_set", "system_instruction": "Be brief."},
        "lock_mode",
        f"Google refuses a lock on 'systemInstruction.parts': {LOCK_ADVICE}",
    ),
    "listed lock over safety settings": (
        {
            "lock_mode": "fields_set_plus",
            "lock_additional_fields": "safety_settings",
            "config": advanced(
                {
                    "safety_settings": [
                        {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}
                    ]
                }
            ),
        },
        "lock_mode",
        f"Google refuses a lock on 'safetySettings': {LOCK_ADVICE}",
    ),
    "listed lock that is no setting": (
        {"lock_mode": "fields_set_plus", "lock_additional_fields": "colour"},
        "lock_additional_fields",
        "'colour' is not a Live setting.",
    ),
    # the Advanced JSON itself
    "a key both a field and the JSON set": (
        {"temperature": "0.5", "config": advanced({"temperature": 0.4})},
        "config",
        "temperature: the Temperature field sets this too; keep it in one place.",
    ),
    "a nested key both a field and the JSON set": (
        {
            "voice": "Puck",
            "config": advanced(
                {"speechConfig": {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Kore"}}}}
            ),
        },
        "config",
        "speech_config.voice_config.prebuilt_voice_config.voice_name: the Voice field sets this "
        "too; keep it in one place.",
    ),
    "JSON that is not an object": (
        {"config": "[1, 2]"},
        "config",
        'Must be a JSON object, such as {"seed": 7}.',
    ),
    "JSON that does not parse": ({"config": "{"}, "config", "Enter a valid JSON."),
    "transport settings in JSON": (
        {"config": advanced({"http_options": {"base_url": "http://evil"}})},
        "config",
        "http_options: is not a Live setting",
    ),
    "a model the platform does not offer": (
        {"model": "gemini-1.5-pro"},
        "model",
        "Select a valid choice. gemini-1.5-pro is not one of the available choices.",
    ),
}


@pytest.mark.parametrize(("overrides", "field", "message"), REFUSALS.values(), ids=REFUSALS)
def test_the_form_refuses_what_google_refuses(organization, overrides, field, message):
    form = bound(organization, form_data(**overrides))

    assert not form.is_valid()
    assert message in form.errors.get(field, []), form.errors


def test_a_form_of_fields_only_is_valid_and_stored_as_the_sdk_takes_it(organization):
    form = bound(
        organization,
        form_data(
            response_modality="AUDIO",
            voice="Kore",
            language="de-DE",
            system_instruction="Du bist ein Tutor.\r\nSei kurz.",
            temperature="0.6",
            top_p="0.9",
            top_k="40",
            max_output_tokens="512",
            session_resumption="on",
            sliding_window="on",
            trigger_tokens="25000",
            input_audio_transcription="on",
            output_audio_transcription="on",
        ),
    )

    assert form.is_valid(), form.errors
    assert form.instance.config == {
        "response_modalities": ["AUDIO"],
        "speech_config": {
            "voice_config": {"prebuilt_voice_config": {"voice_name": "Kore"}},
            "language_code": "de-DE",
        },
        "system_instruction": "Du bist ein Tutor.\nSei kurz.",  # a string: the SDK's own shape
        "temperature": 0.6,
        "top_p": 0.9,
        "top_k": 40.0,
        "max_output_tokens": 512,
        "session_resumption": {},
        "context_window_compression": {"sliding_window": {}, "trigger_tokens": 25000},
        "input_audio_transcription": {},
        "output_audio_transcription": {},
    }
    assert types.LiveConnectConfig.model_validate(form.instance.config)


def test_an_empty_form_stores_an_empty_config_and_shows_no_null(organization):
    form = bound(organization, form_data())

    assert form.is_valid(), form.errors
    assert form.instance.config == {}
    unbound = LiveConstraintProfileForm(instance=LiveConstraintProfile(organization=organization))
    assert "null" not in str(unbound["config"])


# --- JSON → form → JSON, for every field LiveConnectConfig has -------------------------------

SAMPLES = {
    "generation_config": {"temperature": 0.3, "candidate_count": 1},
    "response_modalities": ["TEXT"],
    "temperature": 0.7,
    "top_p": 0.95,
    "top_k": 40,
    "max_output_tokens": 256,
    "media_resolution": "MEDIA_RESOLUTION_LOW",
    "seed": 7,
    "speech_config": {
        "voice_config": {"prebuilt_voice_config": {"voice_name": "Aoede"}},
        "language_code": "fr-FR",
    },
    "thinking_config": {"thinking_budget": 0, "include_thoughts": False},
    "enable_affective_dialog": True,
    "system_instruction": "  You are a tutor.\n  Ask one question at a time.",
    "tools": [{"google_search": {}}, {"function_declarations": [{"name": "lookup"}]}],
    "session_resumption": {},
    "input_audio_transcription": {},
    "output_audio_transcription": {},
    "realtime_input_config": {"automatic_activity_detection": {"disabled": True}},
    "context_window_compression": {"sliding_window": {}, "trigger_tokens": 20000},
    "proactivity": {"proactive_audio": True},
    "explicit_vad_signal": False,
    "history_config": {"initial_history_in_client_content": True},
    "avatar_config": {"avatar_name": "guide"},
    "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
    "translation_config": {"target_language_code": "es-ES", "echo_target_language": False},
    "labels": {"team": "support"},
}

# Shapes a form field could take but must not lose: they stay in the Advanced JSON.
AWKWARD = {
    "system instruction as Content": {
        "system_instruction": {"parts": [{"text": "Be brief."}], "role": "user"}
    },
    "session resumption with a handle": {"session_resumption": {"transparent": True}},
    "sliding window with a target": {
        "context_window_compression": {"sliding_window": {"target_tokens": 500}}
    },
    "a voice beside other voice settings": {
        "speech_config": {
            "voice_config": {"prebuilt_voice_config": {"voice_name": "Puck"}},
            "multi_speaker_voice_config": {"speaker_voice_configs": []},
        }
    },
    "an empty speech config": {"speech_config": {}},
    "a language Google lists elsewhere": {"speech_config": {"language_code": "sw-KE"}},
    "a voice in another case": {
        "speech_config": {"voice_config": {"prebuilt_voice_config": {"voice_name": "puck"}}}
    },
    "everything at once": SAMPLES,
}


def test_the_samples_cover_every_field_the_sdk_accepts():
    """A new LiveConnectConfig field in the SDK fails here until it has a sample."""
    assert set(SAMPLES) == set(types.LiveConnectConfig.model_fields) - FORBIDDEN_CONFIG_FIELDS


def as_browser_data(form: LiveConstraintProfileForm) -> dict[str, str]:
    """What a browser submits for an unbound form, as the admin renders it."""
    data = {}
    for name in form.fields:
        value = form[name].value()
        if value is None or value is False:
            continue
        data[name] = "on" if value is True else str(value)
    return data


ROUND_TRIPS = {name: {name: value} for name, value in SAMPLES.items()} | AWKWARD


@pytest.mark.parametrize("config", ROUND_TRIPS.values(), ids=ROUND_TRIPS)
def test_json_to_form_to_json_loses_nothing(organization, config):
    stored = validate_live_config(config)
    profile = LiveConstraintProfile.objects.create(
        organization=organization, slug="trip", name="Trip", model="gemini-2.0-flash-live-001"
    )
    LiveConstraintProfile.objects.filter(pk=profile.pk).update(config=stored)
    profile.refresh_from_db()

    shown = LiveConstraintProfileForm(instance=profile)
    submitted = LiveConstraintProfileForm(as_browser_data(shown), instance=profile)

    assert submitted.is_valid(), submitted.errors
    assert submitted.cleaned_data["config"] == stored
    assert submitted.instance.config == stored


def test_the_form_fields_take_what_they_can_show_and_leave_the_rest(organization):
    values, rest = split_config(validate_live_config(SAMPLES))

    assert set(values) == {field.name for field in CONFIG_FIELDS}
    assert values["voice"] == "Aoede"
    assert values["response_modality"] == "TEXT"
    assert values["top_k"] == 40
    assert "speech_config" not in rest  # both of its settings have fields
    assert "context_window_compression" not in rest  # both switch and trigger have fields
    assert rest["tools"] == SAMPLES["tools"]


STORED_PROBLEMS = {
    "two modalities": (
        {"config": {"response_modalities": ["AUDIO", "TEXT"]}},
        "config",
        "response_modalities: name exactly one response modality, AUDIO or TEXT",
    ),
    "a lock over tools": (
        {"config": {"tools": [{"google_search": {}}]}, "lock_mode": "fields_set"},
        "lock_mode",
        f"Google refuses a lock on 'tools': {LOCK_ADVICE}",
    ),
}


@pytest.mark.parametrize(
    ("fields", "field", "message"), STORED_PROBLEMS.values(), ids=STORED_PROBLEMS
)
def test_a_stored_profile_google_would_refuse_shows_why_when_opened(
    organization, fields, field, message
):
    profile = LiveConstraintProfile.objects.create(
        organization=organization,
        slug="old",
        name="Old",
        model="gemini-2.0-flash-live-001",
        **fields,
    )

    form = LiveConstraintProfileForm(instance=profile)

    assert form.errors == {field: [message]}


def test_a_model_no_longer_offered_is_kept_until_another_is_chosen(organization):
    profile = LiveConstraintProfile.objects.create(
        organization=organization, slug="old", name="Old", model="gemini-retired-live"
    )

    shown = LiveConstraintProfileForm(instance=profile)
    kept = LiveConstraintProfileForm(as_browser_data(shown), instance=profile)

    assert ("gemini-retired-live", "gemini-retired-live (kept: no longer offered)") in shown.fields[
        "model"
    ].choices
    assert kept.is_valid(), kept.errors
    fresh = bound(organization, form_data(model="gemini-retired-live"))
    assert not fresh.is_valid()
