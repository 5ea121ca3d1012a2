"""Google sign-in end to end: allauth's real provider against a local fake OIDC server."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.tenants.models import Invitation, Membership, Role, User
from tests.factories import DomainFactory, InvitationFactory, OrganizationFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def acme(db):
    organization = OrganizationFactory(name="Acme", slug="acme")
    DomainFactory(organization=organization, name="acme.test", is_verified=True)
    return organization


def claims(email, *, hd=None, verified=True, name="Ada Lovelace"):
    result = {"email": email, "email_verified": verified, "name": name}
    if hd:
        result["hd"] = hd
    return result


def test_workspace_user_joins_the_org_of_its_verified_hd_domain(client, fake_google, acme):
    response = fake_google.sign_in(client, sub="ada-1", **claims("ada@acme.test", hd="acme.test"))

    assert response.status_code == 302
    user = User.objects.get(email="ada@acme.test")
    membership = Membership.objects.get(user=user)
    assert (membership.organization, membership.role) == (acme, Role.MEMBER)
    home = client.get(response["Location"], follow=True)
    assert "Acme" in home.content.decode()


def test_invitation_joins_with_its_role_and_is_used_up(client, fake_google, acme):
    invitation = InvitationFactory(organization=acme, email="grace@partner.test", role=Role.AUDITOR)

    response = fake_google.sign_in(client, sub="grace-1", **claims("Grace@Partner.test"))

    assert response.status_code == 302
    membership = Membership.objects.get(user__email="grace@partner.test")
    assert (membership.organization, membership.role) == (acme, Role.AUDITOR)
    invitation.refresh_from_db()
    assert invitation.accepted_at is not None
    assert invitation.accepted_by == membership.user
    assert client.get("/admin/").status_code == 200  # auditors reach the admin


def test_gmail_account_without_hd_is_refused_even_if_gmail_is_somehow_claimed(
    client, fake_google, acme
):
    response = fake_google.sign_in(client, sub="gm-1", **claims("someone@acme.test"))  # no hd

    assert response.status_code == 302
    assert response["Location"].startswith("/no-organisation/")
    assert not User.objects.filter(email="someone@acme.test").exists()
    page = client.get(response["Location"])
    assert page.status_code == 403
    assert "does not belong to any organisation" in page.content.decode()
    assert not page.wsgi_request.user.is_authenticated


def test_consumer_gmail_domain_cannot_be_claimed(acme):
    from django.core.exceptions import ValidationError

    from apps.tenants.services import domain_create

    with pytest.raises(ValidationError, match="Consumer Google domains"):
        domain_create(organization=acme, name="gmail.com")


def test_unverified_email_is_refused(client, fake_google, acme):
    response = fake_google.sign_in(
        client, sub="unv-1", **claims("eve@acme.test", hd="acme.test", verified=False)
    )

    assert response["Location"] == "/no-organisation/?reason=unverified"
    assert not User.objects.filter(email="eve@acme.test").exists()
    assert "not verified" in client.get(response["Location"]).content.decode()


def test_unverified_email_with_an_invitation_is_still_refused(client, fake_google, acme):
    InvitationFactory(organization=acme, email="mallory@partner.test")

    response = fake_google.sign_in(
        client, sub="mal-1", **claims("mallory@partner.test", verified=False)
    )

    assert response["Location"] == "/no-organisation/?reason=unverified"
    assert Invitation.objects.get(email="mallory@partner.test").accepted_at is None


def test_unverified_domain_claim_does_not_admit(client, fake_google):
    organization = OrganizationFactory(slug="pending")
    DomainFactory(organization=organization, name="pending.test", is_verified=False)

    response = fake_google.sign_in(
        client, sub="p-1", **claims("pat@pending.test", hd="pending.test")
    )

    assert response["Location"].startswith("/no-organisation/")
    assert not Membership.objects.exists()


def test_repeat_sign_in_does_not_duplicate_anything(client, fake_google, acme):
    for _ in range(2):
        fake_google.sign_in(client, sub="ada-2", **claims("ada@acme.test", hd="acme.test"))
        client.post("/accounts/logout/")

    assert User.objects.filter(email="ada@acme.test").count() == 1
    assert Membership.objects.filter(user__email="ada@acme.test").count() == 1


def test_expired_invitation_is_refused(client, fake_google, acme):
    InvitationFactory(
        organization=acme,
        email="late@partner.test",
        expires_at=timezone.now() - timedelta(minutes=1),
    )

    response = fake_google.sign_in(client, sub="late-1", **claims("late@partner.test"))

    assert response["Location"].startswith("/no-organisation/")
    assert not User.objects.filter(email="late@partner.test").exists()


def test_revoked_invitation_is_refused(client, fake_google, acme):
    invitation = InvitationFactory(organization=acme, email="gone@partner.test")
    invitation.revoked_at = timezone.now()
    invitation.save()

    response = fake_google.sign_in(client, sub="gone-1", **claims("gone@partner.test"))

    assert response["Location"].startswith("/no-organisation/")


def test_invitation_to_an_inactive_org_is_refused(client, fake_google, acme):
    acme.is_active = False
    acme.save()
    InvitationFactory(organization=acme, email="x@partner.test")

    response = fake_google.sign_in(client, sub="x-1", **claims("x@partner.test"))

    assert response["Location"].startswith("/no-organisation/")


def test_existing_member_gains_a_new_invitation_on_next_sign_in(client, fake_google, acme):
    fake_google.sign_in(client, sub="ada-3", **claims("ada@acme.test", hd="acme.test"))
    client.post("/accounts/logout/")
    other = OrganizationFactory(name="Partner", slug="partner")
    InvitationFactory(organization=other, email="ada@acme.test", role=Role.ADMIN)

    fake_google.sign_in(client, sub="ada-3", **claims("ada@acme.test", hd="acme.test"))

    roles = dict(
        Membership.objects.filter(user__email="ada@acme.test").values_list(
            "organization__slug", "role"
        )
    )
    assert roles == {"acme": Role.MEMBER, "partner": Role.ADMIN}


def test_invitation_raises_but_never_lowers_an_existing_role(client, fake_google, acme):
    fake_google.sign_in(client, sub="ada-4", **claims("ada@acme.test", hd="acme.test"))
    client.post("/accounts/logout/")
    membership = Membership.objects.get(user__email="ada@acme.test")
    membership.role = Role.OWNER
    membership.save()
    InvitationFactory(organization=acme, email="ada@acme.test", role=Role.AUDITOR)

    fake_google.sign_in(client, sub="ada-4", **claims("ada@acme.test", hd="acme.test"))

    membership.refresh_from_db()
    assert membership.role == Role.OWNER


def test_removed_member_without_entitlement_is_refused(client, fake_google):
    organization = OrganizationFactory(slug="solo")
    invitation = InvitationFactory(organization=organization, email="solo@partner.test")
    fake_google.sign_in(client, sub="solo-1", **claims("solo@partner.test"))
    client.post("/accounts/logout/")
    assert Invitation.objects.get(pk=invitation.pk).accepted_at is not None
    Membership.objects.filter(user__email="solo@partner.test").delete()

    response = fake_google.sign_in(client, sub="solo-1", **claims("solo@partner.test"))

    assert response["Location"].startswith("/no-organisation/")
    assert not client.get("/").wsgi_request.user.is_authenticated
