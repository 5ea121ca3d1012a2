"""Profiles and quotas in the admin, as an admin and an auditor would use them."""

import json

import pytest
from django.test import Client

from apps.audit.models import PolicyChange
from apps.policies.models import LiveConstraintProfile, Quota
from apps.policies.selectors import profile_wire_preview
from apps.tenants.models import Role

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/policies/liveconstraintprofile/add/"


def profile_form(**overrides):
    data = {
        "name": "Support voice",
        "slug": "support-voice",
        "description": "",
        "is_active": "on",
        "model": "gemini-2.0-flash-live-001",
        "config": json.dumps({"response_modalities": ["AUDIO"], "temperature": 0.4}),
        "lock_mode": "fields_set_plus",
        "lock_additional_fields": "tools, temperature",
        "uses": "1",
        "expire_seconds": "1800",
        "new_session_seconds": "60",
        "quotas-TOTAL_FORMS": "1",
        "quotas-INITIAL_FORMS": "0",
        "quotas-MIN_NUM_FORMS": "0",
        "quotas-MAX_NUM_FORMS": "1000",
        "quotas-0-scope": "end_user",
        "quotas-0-client_app": "",
        "quotas-0-window": "hour",
        "quotas-0-limit": "5",
        "versions-TOTAL_FORMS": "0",
        "versions-INITIAL_FORMS": "0",
        "versions-MIN_NUM_FORMS": "0",
        "versions-MAX_NUM_FORMS": "1000",
    }
    data.update(overrides)
    return data


def test_admin_creates_a_profile_with_locked_fields_and_sees_the_preview(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.ADMIN])

    response = client.post(ADD_URL, profile_form())

    assert response.status_code == 302, response.context["adminform"].errors
    profile = LiveConstraintProfile.objects.get(slug="support-voice")
    assert profile.organization == alpha.organization
    assert profile.sdk_lock_additional_fields == ["tools", "temperature"]
    quota = Quota.objects.get(profile=profile)
    assert (quota.organization, quota.scope, quota.limit) == (alpha.organization, "end_user", 5)
    page = client.get(
        f"/admin/policies/liveconstraintprofile/{profile.pk}/change/"
    ).content.decode()
    assert "generationConfig.temperature" in page  # effective locked fields
    assert "fieldMask" in page  # the exact body
    assert "models/gemini-2.0-flash-live-001" in page
    assert "js-genai #1492" not in page  # tools locked but unset: clients may bring none
    assert profile.config == {"response_modalities": ["AUDIO"], "temperature": 0.4}
    assert PolicyChange.objects.filter(
        object_type="policies.quota", action="create", actor=alpha.users[Role.ADMIN]
    ).exists()


def test_bad_config_shows_the_field_path_and_saves_nothing(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.ADMIN])

    response = client.post(
        ADD_URL, profile_form(config='{"generation_config": {"temperature": 9}}')
    )

    assert response.status_code == 200
    assert "generation_config.temperature: must be ≤ 2" in response.content.decode()
    assert not LiveConstraintProfile.objects.filter(slug="support-voice").exists()
    assert not Quota.objects.filter(scope="end_user").exists()


def test_a_ceiling_is_named_when_exceeded(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.ADMIN])

    response = client.post(ADD_URL, profile_form(expire_seconds="7200"))

    assert "Above the plan&#x27;s max expire (3600 seconds)." in response.content.decode()


def test_editing_bumps_the_version_and_the_auditor_sees_the_history(client, two_orgs):
    alpha, _ = two_orgs
    profile = alpha.profile
    client.force_login(alpha.users[Role.ADMIN])
    data = profile_form(
        name=profile.name,
        slug=profile.slug,
        lock_mode="whole_setup",
        lock_additional_fields="",
        config='{"response_modalities": ["TEXT"]}',
        **{"quotas-TOTAL_FORMS": "0"},
    )

    response = client.post(f"/admin/policies/liveconstraintprofile/{profile.pk}/change/", data)

    assert response.status_code == 302
    profile.refresh_from_db()
    assert profile.version == 2
    client.force_login(alpha.users[Role.AUDITOR])
    history = client.get("/admin/audit/policychange/?object_type=policies.liveconstraintprofile")
    assert history.status_code == 200
    assert history.content.decode().count(profile.name) >= 2  # created, then updated
    page = client.get(f"/admin/policies/liveconstraintprofile/{profile.pk}/change/")
    versions = page.context["inline_admin_formsets"][-1]
    assert [form.original.version for form in versions] == [2, 1]
    assert [form.original.snapshot["config"] for form in versions] == [
        {"response_modalities": ["TEXT"]},
        {"response_modalities": ["AUDIO"]},
    ]


def test_auditors_read_profiles_but_cannot_change_them(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.AUDITOR])
    url = f"/admin/policies/liveconstraintprofile/{alpha.profile.pk}/change/"

    page = client.get(url)
    refused = client.post(url, profile_form(name="renamed"))

    assert page.status_code == 200
    assert "wire-preview" in page.content.decode()
    assert 'name="_save"' not in page.content.decode()
    assert refused.status_code == 403
    assert client.post(ADD_URL, profile_form()).status_code == 403
    alpha.profile.refresh_from_db()
    assert alpha.profile.name != "renamed"


def test_members_see_nothing_here(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.MEMBER])

    response = client.get("/admin/policies/liveconstraintprofile/")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


# --- the profile editor's live preview (issue 18, item 4) -----------------------------------

ADD_PREVIEW_URL = "/admin/policies/liveconstraintprofile/add/preview/"


def preview_url(profile) -> str:
    return f"/admin/policies/liveconstraintprofile/{profile.pk}/preview/"


def test_the_preview_answers_for_a_form_never_saved(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.ADMIN])
    changes = PolicyChange.objects.count()

    audio = client.post(ADD_PREVIEW_URL, profile_form(config="", response_modality="AUDIO"))
    text = client.post(ADD_PREVIEW_URL, profile_form(config="", response_modality="TEXT"))

    assert audio.status_code == text.status_code == 200
    assert audio.json()["valid"] and text.json()["valid"]
    setup = text.json()["request"]["bidiGenerateContentSetup"]
    assert setup["generationConfig"]["responseModalities"] == ["TEXT"]
    assert "&quot;TEXT&quot;" in text.json()["html"] and "TEXT" not in audio.json()["html"]
    assert not LiveConstraintProfile.objects.filter(slug="support-voice").exists()
    assert PolicyChange.objects.count() == changes  # a preview writes nothing


def test_the_preview_is_the_request_issuance_sends_once_saved(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.ADMIN])
    data = profile_form(
        config='{"tools": [{"google_search": {}}]}',
        voice="Kore",
        system_instruction="Be brief.",
        lock_mode="whole_setup",
        lock_additional_fields="",
    )

    preview = client.post(ADD_PREVIEW_URL, data).json()["request"]
    assert client.post(ADD_URL, data).status_code == 302
    saved = profile_wire_preview(profile=LiveConstraintProfile.objects.get(slug="support-voice"))

    assert preview["bidiGenerateContentSetup"] == saved.body["bidiGenerateContentSetup"]
    assert preview.get("fieldMask") == saved.body.get("fieldMask")
    assert preview["uses"] == saved.body["uses"]


def test_the_preview_of_a_saved_profile_follows_unsaved_edits_only(client, two_orgs):
    alpha, _ = two_orgs
    profile = alpha.profile
    client.force_login(alpha.users[Role.ADMIN])
    data = profile_form(
        name=profile.name,
        slug=profile.slug,
        config="",
        response_modality="TEXT",
        lock_mode="whole_setup",
        lock_additional_fields="",
    )

    saved = client.get(preview_url(profile)).json()
    edited = client.post(preview_url(profile), data).json()

    assert saved["request"]["bidiGenerateContentSetup"]["generationConfig"] == {
        "responseModalities": ["AUDIO"]
    }
    assert edited["request"]["bidiGenerateContentSetup"]["generationConfig"] == {
        "responseModalities": ["TEXT"]
    }
    profile.refresh_from_db()
    assert (profile.version, profile.config) == (1, {"response_modalities": ["AUDIO"]})


def test_bad_input_gives_the_form_errors_not_a_500(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.ADMIN])

    response = client.post(
        ADD_PREVIEW_URL,
        profile_form(config="{", temperature="hot", voice="Bob", lock_additional_fields="x"),
    )

    assert response.status_code == 200
    answer = response.json()
    assert answer["valid"] is False and answer["request"] is None
    assert set(answer["errors"]) >= {"config", "temperature", "voice"}
    assert "Temperature: Enter a number." in answer["html"]
    assert "Advanced (JSON): Enter a valid JSON." in answer["html"]


def test_another_organisations_profile_has_no_preview(client, two_orgs):
    alpha, bravo = two_orgs
    client.force_login(alpha.users[Role.ADMIN])
    missing = LiveConstraintProfile.objects.order_by("-pk").first().pk + 100

    foreign = client.post(preview_url(bravo.profile), profile_form())
    absent = client.post(f"/admin/policies/liveconstraintprofile/{missing}/preview/", {})

    assert foreign.status_code == absent.status_code == 404
    assert foreign.json() == absent.json()
    assert "bravo" not in foreign.content.decode().lower()


def test_auditors_cannot_use_the_preview(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.AUDITOR])

    assert client.post(ADD_PREVIEW_URL, profile_form()).status_code == 403
    assert client.post(preview_url(alpha.profile), profile_form()).status_code == 403
    assert client.get(preview_url(alpha.profile)).status_code == 403
    page = client.get(f"/admin/policies/liveconstraintprofile/{alpha.profile.pk}/change/")
    assert "data-preview-url" not in page.content.decode()  # no script posts for them


def test_the_preview_needs_the_csrf_token(two_orgs):
    alpha, _ = two_orgs
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alpha.users[Role.ADMIN])

    assert browser.post(ADD_PREVIEW_URL, profile_form()).status_code == 403


def test_the_add_page_offers_the_editor_and_its_script(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.ADMIN])

    page = client.get(ADD_URL).content.decode()

    assert f'data-preview-url="{ADD_PREVIEW_URL}"' in page
    assert "ephemera/profile-preview.js" in page
    assert "<script>" not in page  # nothing inline (the CSP allows none)
    for legend in ("Model and voice", "Generation", "Session", "Advanced (JSON)"):
        assert f">{legend}</h2>" in page
    assert 'value="Puck"' in page and 'value="TEXT"' in page
    assert ">null</textarea>" not in page
    assert 'id="wire-preview"' in page  # a new profile's preview, before any save


def test_a_saved_profile_google_would_refuse_shows_the_error_when_opened(client, two_orgs):
    alpha, _ = two_orgs
    LiveConstraintProfile.objects.filter(pk=alpha.profile.pk).update(
        config={"tools": [{"google_search": {}}]}, lock_mode="fields_set"
    )
    client.force_login(alpha.users[Role.ADMIN])

    page = client.get(f"/admin/policies/liveconstraintprofile/{alpha.profile.pk}/change/")

    text = page.content.decode()
    assert 'id="stored-problems"' in text
    assert text.count("Google refuses a lock on &#x27;tools&#x27;") == 2  # the field, the preview
