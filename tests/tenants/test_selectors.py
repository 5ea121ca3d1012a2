from datetime import timedelta

import pytest
from django.http import Http404
from django.utils import timezone

from apps.audit.models import TokenGrant
from apps.clients.models import ClientApp, ClientKey
from apps.policies.models import LiveConstraintProfile
from apps.tenants import services as tenant_services
from apps.tenants.models import Domain, GeminiCredential, Invitation, Membership, Role
from apps.tenants.selectors import (
    GoogleIdentity,
    StepState,
    onboarding_checklist,
    organization_get_for_user,
    organizations_switchable,
    signin_entitlements,
)
from tests.factories import DomainFactory, InvitationFactory, OrganizationFactory, TokenGrantFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        (
            {"email": "A@X.test", "email_verified": True, "hd": "X.test"},
            GoogleIdentity("a@x.test", True, "x.test"),
        ),
        (
            {"email": "a@gmail.com", "email_verified": "true"},
            GoogleIdentity("a@gmail.com", True, None),
        ),
        ({"email": "a@x.test", "email_verified": "false"}, GoogleIdentity("a@x.test", False, None)),
        ({"email": "a@x.test"}, GoogleIdentity("a@x.test", False, None)),
        ({"email": "a@x.test", "verified_email": True}, GoogleIdentity("a@x.test", True, None)),
    ],
)
def test_identity_from_claims(claims, expected):
    assert GoogleIdentity.from_claims(claims) == expected


def test_entitlements_come_from_hd_not_from_the_email_suffix(two_orgs):
    alpha, _ = two_orgs

    by_hd = signin_entitlements(identity=GoogleIdentity("z@other.test", True, "alpha.test"))
    by_suffix = signin_entitlements(identity=GoogleIdentity("z@alpha.test", True, None))

    assert [(e.organization, e.role) for e in by_hd] == [(alpha.organization, Role.MEMBER)]
    assert by_suffix == []


def test_an_invitation_wins_over_the_domain_role(two_orgs):
    alpha, _ = two_orgs
    identity = GoogleIdentity("invitee@alpha.test", True, "alpha.test")

    (entitlement,) = signin_entitlements(identity=identity)

    assert entitlement.role == Role.ADMIN
    assert entitlement.invitation == alpha.invitation


def test_foreign_and_missing_organisations_look_the_same(two_orgs):
    alpha, bravo = two_orgs

    for wanted in (bravo.organization.pk, 999_999, "not-a-number", None):
        with pytest.raises(Http404):
            organization_get_for_user(user=alpha.owner, organization_id=wanted)
    assert organization_get_for_user(user=alpha.owner, organization_id=alpha.organization.pk)


def test_switcher_lists_only_orgs_where_the_user_may_administer_or_audit(two_orgs, operator):
    alpha, bravo = two_orgs

    assert list(organizations_switchable(user=alpha.owner)) == [alpha.organization]
    assert list(organizations_switchable(user=alpha.users[Role.MEMBER])) == []
    assert set(organizations_switchable(user=operator)) == {
        alpha.organization,
        bravo.organization,
    }


# --- onboarding checklist: every step read from the organisation's own rows ----------------


def step(organization, key):
    return next(s for s in onboarding_checklist(organization=organization) if s.key == key)


@pytest.fixture
def on_google(settings):
    """A real upstream: no sandbox and no platform key, so only the org's own key counts."""
    settings.GEMINI_BASE_URL = ""
    settings.GEMINI_API_KEY = ""


def test_a_fresh_organisation_has_every_step_to_do(on_google):
    organization = OrganizationFactory()

    steps = onboarding_checklist(organization=organization)

    assert [s.key for s in steps] == [
        "domain",
        "gemini",
        "profile",
        "client_app",
        "first_token",
        "auditor",
    ]
    assert [s.state for s in steps] == [StepState.TODO] * 6
    assert not any(s.done for s in steps)


def test_the_checklist_costs_one_query_per_step(two_orgs, django_assert_num_queries):
    alpha, _ = two_orgs

    with django_assert_num_queries(6):
        onboarding_checklist(organization=alpha.organization)


def test_domain_step_claimed_then_verified(two_orgs):
    alpha, bravo = two_orgs
    Domain.objects.filter(organization=alpha.organization).delete()

    assert step(alpha.organization, "domain").state == StepState.TODO  # Bravo's doesn't count
    claimed = DomainFactory(organization=alpha.organization, name="claimed.test", is_verified=False)
    waiting = step(alpha.organization, "domain")
    Domain.objects.filter(pk=claimed.pk).update(is_verified=True)

    assert waiting.state == StepState.WAITING
    assert "claimed.test" in waiting.explanation and "operator" in waiting.explanation
    assert step(alpha.organization, "domain").state == StepState.DONE
    assert step(bravo.organization, "domain").state == StepState.DONE


def test_gemini_step_own_key_platform_key_or_sandbox(two_orgs, settings, on_google):
    alpha, bravo = two_orgs
    GeminiCredential.objects.filter(organization=alpha.organization).delete()

    assert step(alpha.organization, "gemini").state == StepState.TODO  # Bravo's doesn't count
    settings.GEMINI_API_KEY = "platform-key"
    platform = step(alpha.organization, "gemini")
    settings.GEMINI_BASE_URL = "http://127.0.0.1:8765"
    sandbox = step(alpha.organization, "gemini")
    tenant_services.gemini_credential_set(
        organization=alpha.organization, api_key="alpha-own-key-4321", actor=alpha.owner
    )
    own = step(alpha.organization, "gemini")

    assert (platform.state, "platform" in platform.explanation) == (StepState.DONE, True)
    assert (sandbox.state, sandbox.done) == (StepState.SANDBOX, True)
    assert "sandbox" in sandbox.explanation
    assert (own.state, "4321" in own.explanation) == (StepState.DONE, True)
    assert "0000" in step(bravo.organization, "gemini").explanation  # Bravo keeps its own


def test_profile_step_needs_an_active_profile(two_orgs):
    alpha, bravo = two_orgs
    LiveConstraintProfile.objects.filter(organization=alpha.organization).update(is_active=False)

    switched_off = step(alpha.organization, "profile")
    LiveConstraintProfile.objects.filter(pk=alpha.profile.pk).update(is_active=True)
    live = step(alpha.organization, "profile")

    assert (switched_off.state, switched_off.target_id) == (StepState.TODO, None)
    assert (live.state, live.target_id) == (StepState.DONE, alpha.profile.pk)
    assert bravo.profile.slug not in live.explanation


def test_client_app_step_needs_a_usable_key_of_an_active_app(two_orgs):
    alpha, bravo = two_orgs
    keys = ClientKey.objects.filter(pk=alpha.client_key.pk)
    now = timezone.now()

    assert step(alpha.organization, "client_app").state == StepState.DONE
    keys.update(revoked_at=now)
    revoked = step(alpha.organization, "client_app")
    keys.update(revoked_at=None, expires_at=now - timedelta(minutes=1))
    expired = step(alpha.organization, "client_app")
    keys.update(expires_at=now + timedelta(hours=1))
    rotating_out = step(alpha.organization, "client_app")
    ClientApp.objects.filter(pk=alpha.client_app.pk).update(is_active=False)
    app_disabled = step(alpha.organization, "client_app")

    assert (revoked.state, revoked.target_id) == (StepState.TODO, alpha.client_app.pk)
    assert "no working key" in revoked.explanation
    assert expired.state == StepState.TODO
    assert rotating_out.state == StepState.DONE
    assert (app_disabled.state, app_disabled.target_id) == (StepState.TODO, None)
    assert step(bravo.organization, "client_app").state == StepState.DONE


def test_first_token_step_counts_only_issued_grants_of_this_organisation(two_orgs):
    alpha, bravo = two_orgs
    TokenGrantFactory(organization=bravo.organization)
    TokenGrantFactory(organization=alpha.organization, outcome=TokenGrant.Outcome.DENIED_QUOTA)

    before = step(alpha.organization, "first_token")
    TokenGrantFactory(organization=alpha.organization)

    assert before.state == StepState.TODO
    assert step(alpha.organization, "first_token").state == StepState.DONE


def test_auditor_step_present_or_invited(two_orgs):
    alpha, bravo = two_orgs
    organization = alpha.organization
    Membership.objects.filter(organization=organization, role=Role.AUDITOR).delete()
    InvitationFactory(organization=bravo.organization, email="aud@bravo.test", role=Role.AUDITOR)
    InvitationFactory(
        organization=organization,
        email="late@alpha.test",
        role=Role.AUDITOR,
        expires_at=timezone.now() - timedelta(minutes=1),
    )

    # Bravo's auditors, Alpha's admin invitation and an expired one do not count.
    nobody = step(organization, "auditor")
    invitation = InvitationFactory(
        organization=organization, email="aud@alpha.test", role=Role.AUDITOR
    )
    invited = step(organization, "auditor")
    Invitation.objects.filter(pk=invitation.pk).update(accepted_at=timezone.now())
    Membership.objects.filter(organization=organization, user=alpha.users[Role.MEMBER]).update(
        role=Role.AUDITOR
    )
    present = step(organization, "auditor")

    assert nobody.state == StepState.TODO
    assert (invited.state, "aud@alpha.test" in invited.explanation) == (StepState.DONE, True)
    assert (present.state, "aud@alpha.test" in present.explanation) == (StepState.DONE, False)
