import pytest
from django.core.exceptions import ValidationError

from apps.audit.models import PolicyChange
from apps.policies import services
from apps.policies.models import LiveConstraintProfile, LockMode, Quota
from apps.policies.selectors import profile_version_get, profile_wire_preview
from tests.factories import ClientAppFactory, ProfileFactory

pytestmark = pytest.mark.django_db

GOOD = {
    "slug": "tutor",
    "name": "Tutor",
    "model": "gemini-2.0-flash-live-001",
    "config": {"response_modalities": ["AUDIO"], "temperature": 0.7},
}


def create(organization, **overrides):
    return services.profile_create(organization=organization, actor=None, **{**GOOD, **overrides})


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"config": {"bogus": 1}}, "config", "bogus: is not a Live setting"),
        ({"config": {"temperature": "warm"}}, "config", "temperature: must be a number"),
        ({"config": {"temperature": 2.1}}, "config", "temperature: must be ≤ 2"),
        (
            {"config": {"response_modalities": ["SMELL"]}},
            "config",
            "response_modalities[0]: 'SMELL' is not one of TEXT, IMAGE, AUDIO, VIDEO",
        ),
        (
            {"model": "gemini-1.5-pro"},
            "model",
            "'gemini-1.5-pro' is not a Live model this platform allows; choose one of "
            "gemini-2.5-flash-native-audio-preview-09-2025, gemini-live-2.5-flash-preview, "
            "gemini-2.5-flash-preview-native-audio-dialog, gemini-2.0-flash-live-001.",
        ),
        (
            {"expire_seconds": 300, "new_session_seconds": 301},
            "new_session_seconds",
            "Cannot be longer than the token's lifetime.",
        ),
        (
            {"expire_seconds": 72000},
            "expire_seconds",
            "Gemini requires less than 20 hours (71999 seconds at most).",
        ),
        (
            {"expire_seconds": 3601},
            "expire_seconds",
            "Above the plan's max expire (3600 seconds).",
        ),
        (
            {"new_session_seconds": 601, "expire_seconds": 3600},
            "new_session_seconds",
            "Above the plan's max new-session window (600 seconds).",
        ),
        ({"uses": 11}, "uses", "Above the plan's max uses (10)."),
        ({"uses": 0}, "uses", "Unlimited uses (0) are not allowed by the plan."),
        (
            {"lock_mode": LockMode.FIELDS_SET_PLUS, "lock_additional_fields": ["colour"]},
            "lock_additional_fields",
            "'colour' is not a Live setting.",
        ),
        (
            {"lock_mode": LockMode.FIELDS_SET_PLUS, "lock_additional_fields": []},
            "lock_additional_fields",
            "List at least one field, or lock the fields set.",
        ),
        (
            {"lock_mode": LockMode.FIELDS_SET, "lock_additional_fields": ["temperature"]},
            "lock_additional_fields",
            "Only used with 'plus the listed fields'.",
        ),
    ],
)
def test_invalid_profiles_are_refused_with_a_plain_message(two_orgs, overrides, field, message):
    alpha, _ = two_orgs
    changes_before = PolicyChange.objects.count()

    with pytest.raises(ValidationError) as caught:
        create(alpha.organization, **overrides)

    assert message in caught.value.message_dict[field]
    assert not LiveConstraintProfile.objects.filter(slug="tutor").exists()
    assert PolicyChange.objects.count() == changes_before


def test_unlimited_uses_pass_when_the_plan_allows(two_orgs):
    alpha, _ = two_orgs
    alpha.organization.allow_unlimited_uses = True
    alpha.organization.save()

    assert create(alpha.organization, uses=0).uses == 0


def test_every_change_bumps_the_version_and_keeps_the_old_one(two_orgs):
    alpha, _ = two_orgs
    profile = create(alpha.organization)

    services.profile_update(
        organization=alpha.organization,
        profile=profile,
        actor=alpha.owner,
        config={"response_modalities": ["AUDIO"], "temperature": 0.2},
    )
    unchanged = services.profile_update(
        organization=alpha.organization, profile=profile, actor=alpha.owner, name="Tutor"
    )

    assert unchanged.version == 2
    old = profile_version_get(organization=alpha.organization, profile=profile, version=1)
    new = profile_version_get(organization=alpha.organization, profile=profile, version=2)
    assert old.snapshot["config"]["temperature"] == 0.7
    assert new.snapshot["config"]["temperature"] == 0.2
    changes = PolicyChange.objects.filter(object_id=str(profile.pk)).order_by("id")
    assert [c.action for c in changes] == ["create", "update"]
    assert changes[1].before["config"]["temperature"] == 0.7
    assert changes[1].after["config"]["temperature"] == 0.2
    assert changes[1].actor == alpha.owner
    assert changes[1].changed_fields == ["config", "updated_at", "version"]


def test_another_orgs_profile_cannot_be_updated(two_orgs):
    alpha, bravo = two_orgs
    foreign = ProfileFactory(organization=bravo.organization)

    with pytest.raises(LiveConstraintProfile.DoesNotExist):
        services.profile_update(
            organization=alpha.organization, profile=foreign, actor=alpha.owner, name="pwned"
        )

    foreign.refresh_from_db()
    assert foreign.name != "pwned"


def test_preview_of_a_saved_profile(two_orgs):
    alpha, _ = two_orgs
    profile = create(alpha.organization, lock_mode=LockMode.FIELDS_SET)

    preview = profile_wire_preview(profile=profile)

    assert preview.locked_fields == [
        "model",
        "generationConfig.responseModalities",
        "generationConfig.temperature",
    ]
    assert preview.body["uses"] == 1


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"scope": "client_app"}, "client_app", "Choose the client app this quota limits."),
        ({"scope": "profile"}, "profile", "Choose the profile this quota limits."),
        ({"scope": "org", "limit": 0}, "limit", "Ensure this value is greater than or equal to 1."),
    ],
)
def test_invalid_quotas_are_refused(two_orgs, fields, field, message):
    alpha, _ = two_orgs

    with pytest.raises(ValidationError) as caught:
        services.quota_create(
            organization=alpha.organization,
            actor=None,
            **{"window": "minute", "limit": 5, **fields},
        )

    assert message in caught.value.message_dict[field]


def test_a_quota_cannot_point_at_another_orgs_app_or_profile(two_orgs):
    alpha, bravo = two_orgs
    quotas_before = Quota.objects.count()
    foreign_app = ClientAppFactory(organization=bravo.organization)
    foreign_profile = ProfileFactory(organization=bravo.organization)

    with pytest.raises(ValidationError) as caught:
        services.quota_create(
            organization=alpha.organization,
            actor=None,
            scope="client_app",
            client_app=foreign_app,
            window="hour",
            limit=5,
        )
    assert caught.value.message_dict["client_app"] == ["Belongs to another organisation."]
    with pytest.raises(ValidationError):
        services.quota_create(
            organization=alpha.organization,
            actor=None,
            scope="profile",
            profile=foreign_profile,
            window="hour",
            limit=5,
        )
    assert Quota.objects.count() == quotas_before
