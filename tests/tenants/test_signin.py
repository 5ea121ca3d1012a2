"""Google sign-in end to end: allauth's real provider against a local fake OIDC server."""

from datetime import timedelta
from urllib.parse import urlparse

import pytest
from django.utils import timezone

from apps.tenants.models import Invitation, Membership, Role, User
from tests.factories import (
    DomainFactory,
    InvitationFactory,
    MembershipFactory,
    OrganizationFactory,
    UserFactory,
)

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


def test_a_new_member_lands_on_their_profiles_and_an_invited_auditor_on_the_admin(
    client, fake_google, acme
):
    member = fake_google.sign_in(client, sub="ada-1", **claims("ada@acme.test", hd="acme.test"))
    assert member["Location"] == "/"

    client.logout()
    InvitationFactory(organization=acme, email="grace@partner.test", role=Role.AUDITOR)
    auditor = fake_google.sign_in(client, sub="grace-1", **claims("grace@partner.test"))
    assert auditor["Location"] == "/admin/"

    client.logout()  # signing in again (no sign-up this time) lands the same way
    again = fake_google.sign_in(client, sub="grace-1", **claims("grace@partner.test"))
    assert again["Location"] == "/admin/"


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


# --- An existing user meets a Google account not linked to it (issue 18) ------------------

ACCOUNT_FORMS = ("/accounts/3rdparty/signup/", "/accounts/signup/")


def assert_signed_in_as(client, response, user) -> str:
    """The sign-in went through to the portal as ``user``, never by a sign-up form."""
    assert response.status_code == 302
    assert response["Location"] not in ACCOUNT_FORMS, response["Location"]
    landed = client.get(response["Location"], follow=True)
    assert landed.status_code == 200
    assert all(url not in ACCOUNT_FORMS for url, _ in landed.redirect_chain)
    assert landed.wsgi_request.user == user
    return landed.content.decode()


def assert_refused(client, response, reason: str) -> str:
    assert response["Location"] == f"/accounts/refused/?reason={reason}"
    page = client.get(response["Location"])
    assert page.status_code == 200
    assert not page.wsgi_request.user.is_authenticated
    text = page.content.decode()
    assert "Ephemera could not sign you in" in text
    assert 'href="/accounts/login/"' in text
    return text


def test_seeded_demo_owner_signing_in_with_google_becomes_that_user(client, fake_google):
    from allauth.socialaccount.models import SocialAccount

    from portal.demo import demo_seed

    demo_seed(password="demo-password-for-tests")
    owner = User.objects.get(email="owner@demo.example")
    users_before = User.objects.count()

    response = fake_google.sign_in(
        client,
        sub="google-owner-1",
        **claims("owner@demo.example", hd="demo.example", name="Olive Owner"),
    )

    page = assert_signed_in_as(client, response, owner)
    assert User.objects.count() == users_before
    assert User.objects.filter(email__iexact="owner@demo.example").count() == 1
    account = SocialAccount.objects.get(provider="google", uid="google-owner-1")
    assert account.user == owner
    assert "Signed in as Olive Owner." in page  # the admin, greeting by name
    assert "<strong>Olive</strong>" in page  # Django admin's "Welcome, …"
    owner.refresh_from_db()
    assert (owner.first_name, owner.last_name) == ("Olive", "Owner")
    assert Membership.objects.get(user=owner).role == Role.OWNER


def test_workspace_account_recreated_with_a_new_sub_stays_the_same_user(client, fake_google, acme):
    from allauth.socialaccount.models import SocialAccount

    fake_google.sign_in(client, sub="ada-old", **claims("ada@acme.test", hd="acme.test"))
    client.post("/accounts/logout/")
    ada = User.objects.get(email="ada@acme.test")
    Membership.objects.filter(user=ada).update(role=Role.ADMIN)

    response = fake_google.sign_in(client, sub="ada-new", **claims("ada@acme.test", hd="acme.test"))

    assert_signed_in_as(client, response, ada)
    assert User.objects.filter(email="ada@acme.test").count() == 1
    assert set(SocialAccount.objects.filter(user=ada).values_list("uid", flat=True)) == {
        "ada-old",
        "ada-new",
    }
    assert Membership.objects.get(user=ada).role == Role.ADMIN  # nothing lost, nothing added


def test_invited_gmail_address_of_an_existing_user_is_linked_and_joins(client, fake_google, acme):
    bob = UserFactory(username="bob", email="bob@gmail.com")
    other = OrganizationFactory(name="Other", slug="other")
    MembershipFactory(organization=other, user=bob, role=Role.MEMBER)
    InvitationFactory(organization=acme, email="bob@gmail.com", role=Role.AUDITOR)

    response = fake_google.sign_in(client, sub="bob-1", **claims("bob@gmail.com"))

    assert_signed_in_as(client, response, bob)
    assert User.objects.filter(email="bob@gmail.com").count() == 1
    roles = dict(Membership.objects.filter(user=bob).values_list("organization__slug", "role"))
    assert roles == {"other": Role.MEMBER, "acme": Role.AUDITOR}


def test_existing_user_on_a_non_google_address_is_refused_not_duplicated(client, fake_google, acme):
    from allauth.socialaccount.models import SocialAccount

    ada = UserFactory(username="ada@acme.test", email="ada@acme.test")
    MembershipFactory(organization=acme, user=ada, role=Role.OWNER)

    response = fake_google.sign_in(client, sub="mallory-1", **claims("ada@acme.test"))  # no hd

    text = assert_refused(client, response, "not_authoritative")
    assert "neither a Gmail nor a Google Workspace account" in text
    assert User.objects.filter(email="ada@acme.test").count() == 1
    assert not SocialAccount.objects.exists()
    assert "socialaccount_sociallogin" not in client.session  # no sign-up left pending
    assert client.get("/accounts/3rdparty/signup/").status_code == 404


def test_member_whose_domain_nobody_verified_is_told_to_ask_for_an_invitation(
    client, fake_google, acme
):
    arthur = UserFactory(username="arthur", email="arthur@partner.test")
    MembershipFactory(organization=acme, user=arthur, role=Role.AUDITOR)

    response = fake_google.sign_in(
        client, sub="arthur-2", **claims("arthur@partner.test", hd="partner.test")
    )

    text = assert_refused(client, response, "not_vouched")
    assert "invite this address again" in text
    assert User.objects.filter(email="arthur@partner.test").count() == 1

    InvitationFactory(organization=acme, email="arthur@partner.test", role=Role.AUDITOR)
    response = fake_google.sign_in(
        client, sub="arthur-2", **claims("arthur@partner.test", hd="partner.test")
    )
    assert_signed_in_as(client, response, arthur)


def test_the_operators_address_never_signs_in_with_google(client, fake_google, acme):
    operator = UserFactory(
        username="operator", email="ops@acme.test", is_superuser=True, is_staff=True
    )

    response = fake_google.sign_in(client, sub="ops-g", **claims("ops@acme.test", hd="acme.test"))

    assert "Platform operator sign-in" in assert_refused(client, response, "operator")
    assert not operator.socialaccount_set.exists()


def test_adding_a_google_account_to_a_signed_in_user_is_refused(client, fake_google, acme):
    import requests
    from allauth.socialaccount.models import SocialAccount
    from django.conf import settings

    fake_google.sign_in(client, sub="ada-1", **claims("ada@acme.test", hd="acme.test"))
    base = settings.GOOGLE_OAUTH_MOCK_URL
    requests.put(f"{base}/users/eve-1", json=claims("eve@gmail.com"), timeout=5)
    start = client.post("/accounts/google/login/?process=connect")
    consent = requests.post(
        start["Location"], data={"sub": "eve-1"}, allow_redirects=False, timeout=5
    )
    callback = urlparse(consent.headers["Location"])

    response = client.get(f"{callback.path}?{callback.query}")

    assert response["Location"] == "/accounts/refused/?reason=connect"
    assert not SocialAccount.objects.filter(uid="eve-1").exists()


# --- Leaving Google's page without signing in ---------------------------------------------


def start_at_google(client, fake_google, sub: str) -> str:
    """Our login view, then the fake Google's consent page: its URL."""
    import requests

    requests.put(f"{fake_google.base_url}/users/{sub}", json=claims("ada@acme.test"), timeout=5)
    start = client.post("/accounts/google/login/")
    assert start.status_code == 302
    return start["Location"]


def test_cancelling_at_google_lands_on_the_portals_cancelled_page(client, fake_google, acme):
    import requests

    authorize_url = start_at_google(client, fake_google, "ada-cancel")
    denied = requests.post(authorize_url, data={"action": "deny"}, allow_redirects=False, timeout=5)
    callback = urlparse(denied.headers["Location"])
    assert "error=access_denied" in callback.query

    page = client.get(f"{callback.path}?{callback.query}", follow=True)

    assert page.redirect_chain[-1][0] == "/accounts/3rdparty/login/cancelled/"
    text = page.content.decode()
    assert "Sign-in cancelled" in text
    assert 'href="/accounts/login/"' in text
    assert 'class="topbar"' in text  # the portal's own page, not allauth's bare one
    assert not page.wsgi_request.user.is_authenticated
    assert not User.objects.exists()


@pytest.mark.parametrize("query", ["error=server_error&state={state}", "state={state}"])
def test_any_other_provider_error_lands_on_the_portals_error_page(client, fake_google, acme, query):
    from urllib.parse import parse_qs

    authorize_url = start_at_google(client, fake_google, "ada-error")
    state = parse_qs(urlparse(authorize_url).query)["state"][0]

    page = client.get(f"/accounts/google/login/callback/?{query.format(state=state)}")

    assert page.status_code == 401
    text = page.content.decode()
    assert "Google sign-in did not finish" in text
    assert "Third-Party Login Failure" not in text
    assert 'href="/accounts/login/"' in text
    assert 'class="topbar"' in text
    assert not User.objects.exists()


# --- Signing out ------------------------------------------------------------------------


@pytest.mark.parametrize("logout_url", ["/accounts/logout/", "/admin/logout/"])
def test_site_sign_out_and_admin_log_out_end_in_the_same_place(
    client, fake_google, acme, logout_url
):
    InvitationFactory(organization=acme, email="ada@acme.test", role=Role.ADMIN)
    fake_google.sign_in(client, sub="ada-out", **claims("ada@acme.test", hd="acme.test"))
    assert client.get("/admin/").status_code == 200

    response = client.post(logout_url, follow=True)

    assert response.redirect_chain == [("/accounts/login/", 302)]
    assert "You have signed out." in response.content.decode()
    assert not response.wsgi_request.user.is_authenticated
