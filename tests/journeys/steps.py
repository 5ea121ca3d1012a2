"""Steps that more than one journey walks, written once."""

import json

from playwright.sync_api import expect

from apps.policies.models import LiveConstraintProfile
from tests.journeys.support import Screenshots, orm

TUTOR_NAME, TUTOR_SLUG = "Initech tutor", "initech-tutor"


def wire(page) -> dict:
    return json.loads(page.locator("#wire-preview").inner_text())


def build_profile_with_fields(page, portal_url: str, shots: Screenshots) -> None:
    """An admin builds a Live profile with the form fields alone (no JSON typed), watches
    the wire preview follow each choice before saving, meets a lock Google refuses, saves."""
    page.goto(f"{portal_url}/admin/policies/liveconstraintprofile/add/")
    assert page.input_value("#id_config") == ""  # no "null" to start from
    page.locator("#id_name").press_sequentially(TUTOR_NAME)
    page.select_option("#id_model", "gemini-2.0-flash-live-001")

    with page.expect_response(lambda r: r.url.endswith("/add/preview/")):
        page.get_by_label("Text: the model writes").check()
    expect(page.locator("#wire-preview")).to_contain_text('"TEXT"')
    assert wire(page)["bidiGenerateContentSetup"]["generationConfig"] == {
        "responseModalities": ["TEXT"]
    }

    page.get_by_label("Audio: the model speaks").check()
    page.select_option("#id_voice", "Kore")
    page.select_option("#id_language", "en-GB")
    page.fill(
        "#id_system_instruction",
        "You are Initech's patient maths tutor. Ask one question at a time.",
    )
    page.fill("#id_temperature", "0.6")
    page.fill("#id_top_k", "40")
    page.check("#id_session_resumption")
    page.check("#id_sliding_window")
    page.fill("#id_trigger_tokens", "25000")
    page.check("#id_output_audio_transcription")
    expect(page.locator("#wire-preview")).to_contain_text("trigger_tokens")  # the last edit
    body = wire(page)
    setup = body["bidiGenerateContentSetup"]
    assert setup["generationConfig"]["responseModalities"] == ["AUDIO"]
    assert setup["generationConfig"]["speechConfig"]["voice_config"] == {
        "prebuilt_voice_config": {"voice_name": "Kore"}
    }
    assert setup["systemInstruction"]["parts"][0]["text"].startswith("You are Initech's")
    assert "fieldMask" not in body  # the default lock: the whole setup
    expect(page.locator(".field-locked_fields .readonly")).to_contain_text("The whole setup")
    # A lock Google refuses is named in the preview before anything is saved.
    page.select_option("#id_lock_mode", "fields_set")
    expect(page.locator(".field-preview_warnings")).to_contain_text(
        "Google refuses a lock on 'systemInstruction.parts'"
    )
    shots.take(page, "editor-refused-lock")
    page.select_option("#id_lock_mode", "whole_setup")
    expect(page.locator(".field-preview_warnings .readonly")).to_have_text("None")
    expect(page.locator(".field-locked_fields .readonly")).to_contain_text("The whole setup")
    assert not orm(LiveConstraintProfile.objects.filter(slug=TUTOR_SLUG).exists)
    shots.both_sizes(page, "editor")

    page.get_by_role("button", name="Save and continue editing").click()
    expect(page.locator("ul.messagelist")).to_contain_text("was added successfully")
    profile = orm(LiveConstraintProfile.objects.get, slug=TUTOR_SLUG)
    assert profile.config == {
        "response_modalities": ["AUDIO"],
        "speech_config": {
            "voice_config": {"prebuilt_voice_config": {"voice_name": "Kore"}},
            "language_code": "en-GB",
        },
        "system_instruction": "You are Initech's patient maths tutor. Ask one question at a time.",
        "temperature": 0.6,
        "top_k": 40.0,
        "session_resumption": {},
        "context_window_compression": {"sliding_window": {}, "trigger_tokens": 25000},
        "output_audio_transcription": {},
    }
    assert page.input_value("#id_config") == ""  # every setting has its field
    assert page.locator("#id_voice").input_value() == "Kore"
    assert wire(page)["bidiGenerateContentSetup"]["generationConfig"]["temperature"] == 0.6
    shots.both_sizes(page, "saved")
