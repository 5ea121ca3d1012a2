"""The adapters: whatever allauth may try to mail, only the platform operator gets it; a new
Google account becomes an existing user only under the linking rule; people are named by name."""

from datetime import timedelta

import pytest
from allauth.account.adapter import get_adapter
from allauth.account.models import EmailAddress
from allauth.core import context
from django.core import mail
from django.test import RequestFactory
from django.utils import timezone

from apps.tenants import adapters
from apps.tenants.adapters import (
    LinkDecision,
    google_is_authoritative,
    google_link_decision,
    user_display,
)
from apps.tenants.models import Role
from apps.tenants.selectors import GoogleIdentity
from tests.factories import (
    DomainFactory,
    InvitationFactory,
    MembershipFactory,
    OrganizationFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


def send_reset_mail(address: str) -> None:
    with context.request_context(RequestFactory().get("/")):
        get_adapter().send_mail(
            "account/email/password_reset_key",
            address,
            {"password_reset_url": "https://ephemera.test/reset", "user": None},
        )


def test_account_mail_to_a_member_or_a_stranger_is_never_sent(two_orgs):
    alpha, _ = two_orgs

    send_reset_mail(alpha.users[Role.OWNER].email)
    send_reset_mail("stranger@elsewhere.test")

    assert mail.outbox == []


def test_account_mail_to_the_operator_is_sent(operator):
    operator.email = "ops@platform.test"
    operator.save()

    send_reset_mail("OPS@platform.test")

    assert [message.to for message in mail.outbox] == [["OPS@platform.test"]]


# --- The linking rule: which existing user a new Google account may become ----------------


def google(email: str, *, hd: str | None = None, verified: bool = True) -> GoogleIdentity:
    claims = {"email": email, "email_verified": verified}
    if hd:
        claims["hd"] = hd
    return GoogleIdentity.from_claims(claims)


@pytest.fixture
def acme(db):
    organization = OrganizationFactory(name="Acme", slug="acme")
    DomainFactory(organization=organization, name="acme.test", is_verified=True)
    return organization


@pytest.fixture
def ada(acme):
    """A member as the demo seed or the operator makes one: no Google account linked."""
    user = UserFactory(username="ada@acme.test", email="ada@acme.test")
    MembershipFactory(organization=acme, user=user, role=Role.OWNER)
    return user


@pytest.mark.parametrize(
    ("identity", "authoritative"),
    [
        (google("ada@acme.test", hd="acme.test"), True),  # Workspace
        (google("ada@gmail.com"), True),  # Gmail
        (google("ada@googlemail.com"), True),
        (google("ada@acme.test"), False),  # a Google account made on someone's address
        (google("ada@gmail.com", verified=False), False),
        (google("ada@acme.test", hd="acme.test", verified=False), False),
    ],
)
def test_google_is_authoritative_only_for_gmail_and_workspace(identity, authoritative):
    assert google_is_authoritative(identity) is authoritative


def test_an_address_nobody_holds_is_a_new_person():
    assert google_link_decision(identity=google("new@acme.test", hd="acme.test")) == LinkDecision()


def test_workspace_account_on_a_verified_domain_of_the_users_org_is_linked(ada):
    assert google_link_decision(identity=google("ADA@acme.test", hd="acme.test")).user == ada


def test_the_users_address_is_matched_whatever_its_case(acme):
    user = UserFactory(username="grace", email="Grace@Acme.Test")
    MembershipFactory(organization=acme, user=user)

    assert google_link_decision(identity=google("grace@acme.test", hd="acme.test")).user == user


def test_an_open_invitation_to_the_exact_gmail_address_links(acme):
    user = UserFactory(username="bob", email="bob@gmail.com")
    InvitationFactory(organization=acme, email="bob@gmail.com", role=Role.AUDITOR)

    assert google_link_decision(identity=google("bob@gmail.com")).user == user


def test_another_organisations_invitation_does_not_vouch_for_a_member_elsewhere(acme, ada):
    """Whoever holds ada's mailbox now must not get her Acme role by being invited to Bravo."""
    elsewhere = OrganizationFactory(name="Elsewhere", slug="elsewhere")
    InvitationFactory(organization=elsewhere, email="ada@acme.test", role=Role.MEMBER)
    acme.domains.update(is_verified=False)

    decision = google_link_decision(identity=google("ada@acme.test", hd="acme.test"))

    assert decision == LinkDecision(refusal=adapters.NOT_VOUCHED)


def test_an_invitation_from_the_users_own_organisation_vouches(acme, ada):
    InvitationFactory(organization=acme, email="ada@acme.test", role=Role.ADMIN)
    acme.domains.update(is_verified=False)

    assert google_link_decision(identity=google("ada@acme.test", hd="acme.test")).user == ada


def test_a_gmail_member_without_an_open_invitation_is_not_vouched_for(acme):
    user = UserFactory(username="bob", email="bob@gmail.com")
    MembershipFactory(organization=acme, user=user)

    decision = google_link_decision(identity=google("bob@gmail.com"))

    assert decision == LinkDecision(refusal=adapters.NOT_VOUCHED)


def test_unverified_address_is_refused(ada):
    decision = google_link_decision(
        identity=google("ada@acme.test", hd="acme.test", verified=False)
    )

    assert decision == LinkDecision(refusal=adapters.UNVERIFIED)


def test_a_google_account_made_on_a_non_google_address_is_refused_even_if_invited(ada, acme):
    """No hd and not Gmail: Google checked the mailbox once; whoever made the account then may
    have left. Taking over an existing user (and all its memberships) needs more than that."""
    InvitationFactory(organization=acme, email="ada@acme.test")

    decision = google_link_decision(identity=google("ada@acme.test"))

    assert decision == LinkDecision(refusal=adapters.NOT_AUTHORITATIVE)


def test_workspace_domain_of_another_org_does_not_vouch(ada):
    other = OrganizationFactory(slug="other")
    DomainFactory(organization=other, name="other.test", is_verified=True)

    decision = google_link_decision(identity=google("ada@acme.test", hd="other.test"))

    assert decision == LinkDecision(refusal=adapters.NOT_VOUCHED)


def test_unverified_domain_claim_does_not_vouch(acme):
    user = UserFactory(username="pat@pending.test", email="pat@pending.test")
    MembershipFactory(organization=acme, user=user)
    DomainFactory(organization=acme, name="pending.test", is_verified=False)

    decision = google_link_decision(identity=google("pat@pending.test", hd="pending.test"))

    assert decision == LinkDecision(refusal=adapters.NOT_VOUCHED)


def test_inactive_organisation_does_not_vouch(ada, acme):
    acme.is_active = False
    acme.save()

    decision = google_link_decision(identity=google("ada@acme.test", hd="acme.test"))

    assert decision == LinkDecision(refusal=adapters.NOT_VOUCHED)


@pytest.mark.parametrize("state", ["expired", "revoked", "accepted"])
def test_a_used_up_invitation_does_not_vouch(acme, state):
    UserFactory(username="bob", email="bob@gmail.com")
    invitation = InvitationFactory(organization=acme, email="bob@gmail.com")
    now = timezone.now()
    if state == "expired":
        invitation.expires_at = now - timedelta(minutes=1)
    elif state == "revoked":
        invitation.revoked_at = now
    else:
        invitation.accepted_at = now
    invitation.save()

    decision = google_link_decision(identity=google("bob@gmail.com"))

    assert decision == LinkDecision(refusal=adapters.NOT_VOUCHED)


@pytest.mark.parametrize("flag", ["is_superuser", "is_staff"])
def test_the_operators_account_is_never_linked(acme, flag):
    operator = UserFactory(username="ops", email="ops@acme.test", **{flag: True})
    MembershipFactory(organization=acme, user=operator, role=Role.OWNER)

    decision = google_link_decision(identity=google("ops@acme.test", hd="acme.test"))

    assert decision == LinkDecision(refusal=adapters.OPERATOR)


def test_a_deactivated_user_is_not_linked(ada):
    ada.is_active = False
    ada.save()

    decision = google_link_decision(identity=google("ada@acme.test", hd="acme.test"))

    assert decision == LinkDecision(refusal=adapters.INACTIVE)


def test_two_users_with_the_address_are_never_guessed_between(ada):
    UserFactory(username="ada-copy", email="ada@acme.test")

    decision = google_link_decision(identity=google("ada@acme.test", hd="acme.test"))

    assert decision == LinkDecision(refusal=adapters.AMBIGUOUS)


def test_an_address_listed_on_another_user_counts_as_held(ada):
    other = UserFactory(username="other", email="other@acme.test")
    EmailAddress.objects.create(user=other, email="ada@acme.test", verified=False)

    decision = google_link_decision(identity=google("ada@acme.test", hd="acme.test"))

    assert decision == LinkDecision(refusal=adapters.AMBIGUOUS)


@pytest.mark.parametrize(
    ("fields", "shown"),
    [
        ({"first_name": "Ada", "last_name": "Lovelace"}, "Ada Lovelace"),
        ({}, "ada@acme.test"),
    ],
)
def test_people_are_named_by_their_name_or_address_never_the_username(fields, shown):
    user = UserFactory(username="ada7", email="ada@acme.test", **fields)

    assert user_display(user) == shown


def test_without_name_or_address_the_username_is_all_there_is():
    assert user_display(UserFactory(username="operator", email="")) == "operator"
