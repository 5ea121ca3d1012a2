"""The owner's forms refuse what cannot work, in words that say what to do instead (issue 18)."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.tenants.forms import LAST_OWNER, InvitationForm, MembershipForm
from apps.tenants.models import Invitation, Membership, Role
from apps.tenants.roles import ROLE_DESCRIPTIONS
from tests.factories import InvitationFactory, MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db


def invitation_form(organization, *, email="new@partner.test", role=Role.ADMIN, expires_in=None):
    expires_at = timezone.localtime() + (expires_in or timedelta(days=3))
    data = {"email": email, "role": role, "expires_at": expires_at.strftime("%Y-%m-%d %H:%M:%S")}
    return InvitationForm(data=data, instance=Invitation(organization=organization))


def test_a_fresh_address_is_accepted_and_normalised(two_orgs):
    alpha, _ = two_orgs

    form = invitation_form(alpha.organization, email="  New.Person@Partner.TEST ")

    assert form.is_valid(), form.errors
    assert form.cleaned_data["email"] == "new.person@partner.test"


def test_an_expiry_in_the_past_is_a_form_error(two_orgs):
    alpha, _ = two_orgs

    form = invitation_form(alpha.organization, expires_in=timedelta(minutes=-5))

    assert not form.is_valid()
    assert form.errors["expires_at"] == [
        "This expiry has already passed: pick a date and time in the future."
    ]


def test_an_expiry_beyond_thirty_days_is_a_form_error(two_orgs):
    alpha, _ = two_orgs

    form = invitation_form(alpha.organization, expires_in=timedelta(days=31))

    assert not form.is_valid()
    (error,) = form.errors["expires_at"]
    assert error.startswith("An invitation may stay open for at most 30 days: pick a date and")
    assert invitation_form(alpha.organization, expires_in=timedelta(days=29)).is_valid()


def test_inviting_a_member_offers_to_change_their_role_instead(two_orgs):
    alpha, _ = two_orgs
    auditor = Membership.objects.get(
        organization=alpha.organization, user=alpha.users[Role.AUDITOR]
    )

    form = invitation_form(alpha.organization, email="Auditor@Alpha.test", role=Role.ADMIN)

    assert not form.is_valid()
    change_url = reverse("admin:tenants_membership_change", args=[auditor.pk])
    assert form.errors["email"] == [
        "auditor@alpha.test is already a member of Alpha Org, as Auditor. To give them "
        f'another role, <a href="{change_url}">change their membership</a> instead.'
    ]


def test_inviting_an_address_with_an_open_invitation_offers_to_resend_it(two_orgs):
    alpha, _ = two_orgs

    form = invitation_form(alpha.organization, email="invitee@alpha.test")

    assert not form.is_valid()
    (error,) = form.errors["email"]
    assert error.startswith("invitee@alpha.test already has an open invitation, as Admin, until")
    open_url = reverse("admin:tenants_invitation_change", args=[alpha.invitation.pk])
    assert f'<a href="{open_url}">Open it to send the e-mail again</a>' in error


def test_used_up_invitations_and_other_organisations_do_not_block_an_invitation(two_orgs):
    alpha, bravo = two_orgs
    InvitationFactory(
        organization=alpha.organization,
        email="back@partner.test",
        expires_at=timezone.now() - timedelta(days=1),
    )
    InvitationFactory(
        organization=alpha.organization, email="back@partner.test", revoked_at=timezone.now()
    )
    InvitationFactory(organization=bravo.organization, email="back@partner.test")
    MembershipFactory(
        organization=bravo.organization, user=UserFactory(username="back@partner.test")
    )

    assert invitation_form(alpha.organization, email="back@partner.test").is_valid()


def test_the_role_picker_explains_every_role(two_orgs):
    alpha, _ = two_orgs
    owner = Membership.objects.get(organization=alpha.organization, user=alpha.owner)

    for form in (invitation_form(alpha.organization), MembershipForm(instance=owner)):
        help_text = form.fields["role"].help_text
        for role, description in ROLE_DESCRIPTIONS.items():
            assert f"<li><strong>{role.label}</strong>: " in help_text
            assert description.replace("'", "&#x27;") in help_text


def test_the_last_owner_cannot_be_demoted_by_the_form(two_orgs):
    alpha, _ = two_orgs
    owner = Membership.objects.get(organization=alpha.organization, user=alpha.owner)
    data = {"organization": alpha.organization.pk, "user": alpha.owner.pk, "role": Role.ADMIN}

    form = MembershipForm(data=data, instance=owner)

    assert not form.is_valid()
    assert form.errors["role"] == [LAST_OWNER]
