"""Profiles and quotas in the admin, as an admin and an auditor would use them."""

import json

import pytest

from apps.audit.models import PolicyChange
from apps.policies.models import LiveConstraintProfile, Quota
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
        "config": json.dumps(
            {"response_modalities": ["AUDIO"], "temperature": 0.4, "tools": [{"google_search": {}}]}
        ),
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
    assert "js-genai #1492" in page  # tools is a list of objects
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
