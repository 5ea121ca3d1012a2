"""What each role notices in the tenant admin: what it may see, change, and where it works."""

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.audit.models import PolicyChange, TokenGrant
from apps.tenants.context import ACTIVE_ORGANIZATION_SESSION_KEY
from apps.tenants.models import Domain, Invitation, Membership, Organization, Role
from apps.tenants.selectors import gemini_api_key_for
from tests.factories import (
    DomainFactory,
    MembershipFactory,
    OrganizationFactory,
    TokenGrantFactory,
)

pytestmark = pytest.mark.django_db

LAST_OWNER = "An organisation must keep at least one owner."


def admin_url(model, view, *args) -> str:
    return reverse(f"admin:tenants_{model._meta.model_name}_{view}", args=args)


def text(response) -> str:
    return response.content.decode()


def expiry_fields(days=3) -> dict[str, str]:
    when = timezone.localtime() + timedelta(days=days)
    return {"expires_at_0": when.strftime("%Y-%m-%d"), "expires_at_1": when.strftime("%H:%M:%S")}


def membership_of(world, role) -> Membership:
    return Membership.objects.get(organization=world.organization, user=world.users[role])


def switch(client, organization) -> object:
    pk = "" if organization is None else organization.pk
    return client.post(reverse("admin:switch_organization"), {"organization": pk})


# --- auditors: see everything of their organisation, change nothing ------------------------


def _tenant_rows(world):
    return {
        Membership: membership_of(world, Role.MEMBER),
        Invitation: world.invitation,
        Domain: world.domain,
    }


@pytest.mark.parametrize("model", [Membership, Invitation, Domain], ids=lambda m: m.__name__)
def test_auditor_sees_rows_but_gets_no_add_change_or_delete(client, two_orgs, model):
    alpha, _ = two_orgs
    obj = _tenant_rows(alpha)[model]
    client.force_login(alpha.users[Role.AUDITOR])

    changelist = client.get(admin_url(model, "changelist"))
    change_page = client.get(admin_url(model, "change", obj.pk))

    assert changelist.status_code == 200
    assert obj in changelist.context["cl"].result_list
    assert admin_url(model, "change", obj.pk) in text(changelist)  # the row links to its page
    assert admin_url(model, "add") not in text(changelist)  # no add button, nor in the sidebar
    assert 'name="action"' not in text(changelist)  # no bulk actions at all
    assert change_page.status_code == 200  # read-only
    assert 'name="_save"' not in text(change_page)
    assert "deletelink" not in text(change_page)
    before = list(model.objects.order_by("pk").values())
    refused = [
        client.post(admin_url(model, "change", obj.pk), {"role": Role.OWNER, "name": "x.test"}),
        client.post(admin_url(model, "delete", obj.pk), {"post": "yes"}),
        client.post(admin_url(model, "add"), {"email": "x@alpha.test", "name": "x.alpha.test"}),
        client.get(admin_url(model, "add")),
        client.get(admin_url(model, "delete", obj.pk)),
    ]
    assert [response.status_code for response in refused] == [403] * len(refused)
    assert list(model.objects.order_by("pk").values()) == before


def test_auditor_cannot_run_an_action_by_posting_it(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.AUDITOR])

    client.post(
        admin_url(Invitation, "changelist"),
        {"action": "revoke_invitations", "_selected_action": [alpha.invitation.pk]},
    )

    alpha.invitation.refresh_from_db()
    assert alpha.invitation.revoked_at is None


# --- owners: invite, change roles, never lose the last owner -----------------------------


def test_owner_invites_into_the_active_org_as_the_inviter(client, two_orgs):
    alpha, bravo = two_orgs
    client.force_login(alpha.owner)

    response = client.post(
        admin_url(Invitation, "add"),
        {
            "email": "New.Person@Partner.test",
            "role": Role.AUDITOR,
            "organization": bravo.organization.pk,  # ignored: not a field for members
            **expiry_fields(),
        },
    )

    assert response.status_code == 302, response.context and response.context["errors"]
    invitation = Invitation.objects.get(email="new.person@partner.test")
    assert invitation.organization == alpha.organization
    assert invitation.invited_by == alpha.owner
    assert invitation.role == Role.AUDITOR
    assert invitation.status == "pending"


def test_reinviting_an_address_with_an_open_invitation_offers_to_resend_it(client, two_orgs):
    """Issue 18: a second invitation for the same address is a form error pointing at the
    open one (send it again, or revoke it first), not a silent replacement."""
    alpha, bravo = two_orgs
    client.force_login(alpha.owner)

    response = client.post(
        admin_url(Invitation, "add"),
        {"email": "Invitee@Alpha.test", "role": Role.MEMBER, **expiry_fields()},
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["email"]
    assert errors == [
        "invitee@alpha.test already has an open invitation, as Admin, until "
        f"{timezone.localtime(alpha.invitation.expires_at):%Y-%m-%d %H:%M}. "
        f'<a href="{admin_url(Invitation, "change", alpha.invitation.pk)}">Open it to send the '
        "e-mail again</a>, or revoke it there before inviting them with another role."
    ]
    assert Invitation.objects.filter(organization=alpha.organization).count() == 1
    alpha.invitation.refresh_from_db()
    assert alpha.invitation.status == "pending"
    bravo.invitation.refresh_from_db()
    assert bravo.invitation.status == "pending"  # another organisation's invitation is theirs


def test_owner_revokes_an_invitation_with_the_action(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.owner)

    response = client.post(
        admin_url(Invitation, "changelist"),
        {"action": "revoke_invitations", "_selected_action": [alpha.invitation.pk]},
        follow=True,
    )

    alpha.invitation.refresh_from_db()
    assert alpha.invitation.status == "revoked"
    assert "Revoked" in text(response)


def test_invitations_are_never_edited_or_deleted(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.owner)

    page = client.get(admin_url(Invitation, "change", alpha.invitation.pk))
    post = client.post(admin_url(Invitation, "change", alpha.invitation.pk), {"role": Role.OWNER})

    assert page.status_code == 200
    assert 'name="_save"' not in text(page)
    assert post.status_code == 403


def test_owner_changes_a_members_role(client, two_orgs):
    alpha, _ = two_orgs
    member = membership_of(alpha, Role.MEMBER)
    client.force_login(alpha.owner)

    response = client.post(admin_url(Membership, "change", member.pk), {"role": Role.ADMIN})

    assert response.status_code == 302
    member.refresh_from_db()
    assert member.role == Role.ADMIN


def test_owner_cannot_move_a_membership_to_another_user(client, two_orgs):
    alpha, bravo = two_orgs
    member = membership_of(alpha, Role.MEMBER)
    client.force_login(alpha.owner)

    client.post(
        admin_url(Membership, "change", member.pk),
        {"role": Role.MEMBER, "user": bravo.owner.pk, "organization": bravo.organization.pk},
    )

    member.refresh_from_db()
    assert (member.user, member.organization) == (alpha.users[Role.MEMBER], alpha.organization)


def test_last_owner_cannot_be_demoted(client, two_orgs):
    alpha, _ = two_orgs
    owner = membership_of(alpha, Role.OWNER)
    client.force_login(alpha.owner)

    response = client.post(admin_url(Membership, "change", owner.pk), {"role": Role.ADMIN})

    assert response.status_code == 200  # the form again, with the reason
    assert LAST_OWNER in text(response)
    owner.refresh_from_db()
    assert owner.role == Role.OWNER


def test_an_owner_can_be_demoted_while_another_remains(client, two_orgs):
    alpha, _ = two_orgs
    owner = membership_of(alpha, Role.OWNER)
    Membership.objects.filter(pk=membership_of(alpha, Role.ADMIN).pk).update(role=Role.OWNER)
    client.force_login(alpha.owner)

    response = client.post(admin_url(Membership, "change", owner.pk), {"role": Role.ADMIN})

    assert response.status_code == 302
    owner.refresh_from_db()
    assert owner.role == Role.ADMIN


def test_last_owner_cannot_be_deleted(client, two_orgs):
    alpha, _ = two_orgs
    owner = membership_of(alpha, Role.OWNER)
    client.force_login(alpha.owner)

    response = client.post(admin_url(Membership, "delete", owner.pk), {"post": "yes"}, follow=True)

    assert response.status_code == 200
    assert Membership.objects.filter(pk=owner.pk).exists()
    shown = [str(message) for message in response.context["messages"]]
    assert any(LAST_OWNER in message for message in shown), shown
    assert not any("deleted successfully" in message for message in shown), shown


def test_last_owner_cannot_be_deleted_in_bulk(client, two_orgs):
    alpha, _ = two_orgs
    owner, member = membership_of(alpha, Role.OWNER), membership_of(alpha, Role.MEMBER)
    client.force_login(alpha.owner)

    response = client.post(
        admin_url(Membership, "changelist"),
        {"action": "delete_selected", "_selected_action": [owner.pk, member.pk], "post": "yes"},
        follow=True,
    )

    assert response.status_code == 200
    assert Membership.objects.filter(pk__in=[owner.pk, member.pk]).count() == 2  # all or none
    shown = [str(message) for message in response.context["messages"]]
    assert any(LAST_OWNER in message for message in shown), shown
    assert not any("Successfully deleted" in message for message in shown), shown


def test_one_of_two_owners_can_be_deleted(client, two_orgs):
    alpha, _ = two_orgs
    second_owner = membership_of(alpha, Role.ADMIN)
    Membership.objects.filter(pk=second_owner.pk).update(role=Role.OWNER)
    client.force_login(alpha.owner)

    response = client.post(admin_url(Membership, "delete", second_owner.pk), {"post": "yes"})

    assert response.status_code == 302
    assert not Membership.objects.filter(pk=second_owner.pk).exists()


def test_owner_removes_a_member(client, two_orgs):
    alpha, _ = two_orgs
    member = membership_of(alpha, Role.MEMBER)
    client.force_login(alpha.owner)

    response = client.post(admin_url(Membership, "delete", member.pk), {"post": "yes"})

    assert response.status_code == 302
    assert not Membership.objects.filter(pk=member.pk).exists()


# --- admins: see people, do not manage them ----------------------------------------------


def test_admin_cannot_manage_memberships_or_invitations(client, two_orgs):
    alpha, _ = two_orgs
    member = membership_of(alpha, Role.MEMBER)
    client.force_login(alpha.users[Role.ADMIN])

    memberships = client.get(admin_url(Membership, "changelist"))
    invitations = client.get(admin_url(Invitation, "changelist"))
    member_page = client.get(admin_url(Membership, "change", member.pk))

    assert memberships.status_code == invitations.status_code == 200
    assert "member@alpha.test" in text(memberships)
    assert admin_url(Membership, "add") not in text(memberships)
    assert admin_url(Invitation, "add") not in text(invitations)
    assert 'name="_save"' not in text(member_page)
    refused = [
        client.post(admin_url(Membership, "change", member.pk), {"role": Role.ADMIN}),
        client.post(admin_url(Membership, "delete", member.pk), {"post": "yes"}),
        client.get(admin_url(Invitation, "add")),
        client.post(
            admin_url(Invitation, "add"),
            {"email": "x@alpha.test", "role": Role.OWNER, **expiry_fields()},
        ),
    ]
    assert [response.status_code for response in refused] == [403] * len(refused)
    client.post(
        admin_url(Invitation, "changelist"),
        {"action": "revoke_invitations", "_selected_action": [alpha.invitation.pk]},
    )
    member.refresh_from_db()
    alpha.invitation.refresh_from_db()
    assert member.role == Role.MEMBER
    assert alpha.invitation.status == "pending"
    assert not Invitation.objects.filter(email="x@alpha.test").exists()


# --- domains and organisations: the operator's ------------------------------------------


def test_owner_cannot_add_change_or_verify_domains(client, two_orgs):
    alpha, _ = two_orgs
    claim = DomainFactory(
        organization=alpha.organization, name="claim.alpha.test", is_verified=False
    )
    claim.verified_at = None
    claim.save()
    client.force_login(alpha.owner)

    changelist = client.get(admin_url(Domain, "changelist"))
    refused = [
        client.get(admin_url(Domain, "add")),
        client.post(admin_url(Domain, "add"), {"name": "new.alpha.test", "is_verified": "on"}),
        client.post(
            admin_url(Domain, "change", claim.pk), {"name": claim.name, "is_verified": "on"}
        ),
    ]
    client.post(
        admin_url(Domain, "changelist"),
        {"action": "verify_domains", "_selected_action": [claim.pk]},
    )

    assert "verify_domains" not in text(changelist)
    assert [response.status_code for response in refused] == [403] * len(refused)
    claim.refresh_from_db()
    assert claim.is_verified is False
    assert not Domain.objects.filter(name="new.alpha.test").exists()


def test_operator_adds_and_verifies_domains(client, two_orgs, operator):
    alpha, _ = two_orgs
    client.force_login(operator)

    added = client.post(
        admin_url(Domain, "add"),
        {"organization": alpha.organization.pk, "name": "new.alpha.test"},
    )
    domain = Domain.objects.get(name="new.alpha.test")
    changelist = client.get(admin_url(Domain, "changelist"))
    verified = client.post(
        admin_url(Domain, "changelist"),
        {"action": "verify_domains", "_selected_action": [domain.pk]},
        follow=True,
    )

    assert added.status_code == 302
    assert domain.organization == alpha.organization
    assert 'value="verify_domains"' in text(changelist)
    domain.refresh_from_db()
    assert domain.is_verified is True
    assert domain.verified_at is not None
    assert "Verified 1 domain" in text(verified)


# --- domain verification by DNS: the org publishes, checks; the operator decides ----------


def _unverified_claim(world, name="claim.alpha.test"):
    return DomainFactory(
        organization=world.organization, name=name, is_verified=False, verified_at=None
    )


def _txt(domain) -> tuple[str, str]:
    return (
        f"_ephemera-challenge.{domain.name}",
        f"ephemera-verification={domain.verification_token}",
    )


@pytest.mark.parametrize("role", [Role.ADMIN, Role.OWNER])
def test_admins_and_owners_see_the_record_to_publish_with_copy_buttons(client, two_orgs, role):
    alpha, _ = two_orgs
    claim = _unverified_claim(alpha)
    name, value = _txt(claim)
    client.force_login(alpha.users[role])

    page = text(client.get(admin_url(Domain, "change", claim.pk)))
    listing = text(client.get(admin_url(Domain, "changelist")))

    for html in (page, listing):
        assert name in html and value in html
        assert "data-copy-target=" in html
        assert '<script src="/static/ephemera/copy.js"' in html
    assert '<code id="dns-record-value">' + value + "</code>" in page
    assert 'id="check-dns"' in page
    assert reverse("admin:tenants_domain_check_dns", args=[claim.pk]) in page
    assert 'id="verify-domain"' not in page  # the operator's decision


def test_an_auditor_sees_the_status_but_neither_the_record_nor_the_button(client, two_orgs):
    alpha, _ = two_orgs
    claim = _unverified_claim(alpha)
    client.force_login(alpha.users[Role.AUDITOR])

    page = text(client.get(admin_url(Domain, "change", claim.pk)))
    listing = text(client.get(admin_url(Domain, "changelist")))

    for html in (page, listing):
        assert claim.verification_token not in html
        assert 'id="check-dns"' not in html
    assert "never checked" in listing
    assert '<div class="readonly" id="dns-check-result">never checked</div>' in page


def test_check_dns_now_records_the_result_and_tells_the_admin(client, two_orgs, dns_server):
    alpha, _ = two_orgs
    claim = _unverified_claim(alpha)
    name, value = _txt(claim)
    dns_server.txt(name, value)
    admin = alpha.users[Role.ADMIN]
    client.force_login(admin)

    response = client.post(admin_url(Domain, "check_dns", claim.pk), follow=True)

    assert response.redirect_chain == [(admin_url(Domain, "change", claim.pk), 302)]
    assert (
        "DNS check of claim.alpha.test: found the TXT record at "
        "_ephemera-challenge.claim.alpha.test." in text(response)
    )
    assert "The platform operator can now verify the domain." in text(response)
    claim.refresh_from_db()
    assert (claim.last_check_result, claim.is_verified) == ("found", False)
    assert claim.last_checked_at is not None
    change = PolicyChange.objects.get(object_type="tenants.domain", object_id=str(claim.pk))
    assert change.actor == admin
    listing = text(client.get(admin_url(Domain, "changelist")))
    assert "TXT verified (" in listing and "); awaiting the operator" in listing


def test_check_dns_now_says_what_is_wrong(client, two_orgs, dns_server):
    alpha, _ = two_orgs
    claim = _unverified_claim(alpha)
    dns_server.txt(_txt(claim)[0], "ephemera-verification=a-token-from-elsewhere")
    client.force_login(alpha.owner)

    response = client.post(admin_url(Domain, "check_dns", claim.pk), follow=True)

    assert (
        "DNS check of claim.alpha.test: TXT present but the value does not match at "
        "_ephemera-challenge.claim.alpha.test." in text(response)
    )
    listing = text(client.get(admin_url(Domain, "changelist")))
    assert "TXT present but the value does not match (" in listing
    assert "awaiting the operator" not in listing


def test_the_check_dns_action_checks_the_selected_claims(client, two_orgs, dns_server):
    alpha, _ = two_orgs
    published, missing = _unverified_claim(alpha), _unverified_claim(alpha, "no.alpha.test")
    dns_server.txt(*_txt(published))
    client.force_login(alpha.users[Role.ADMIN])

    client.post(
        admin_url(Domain, "changelist"),
        {"action": "check_dns", "_selected_action": [published.pk, missing.pk]},
    )

    published.refresh_from_db()
    missing.refresh_from_db()
    assert (published.last_check_result, missing.last_check_result) == ("found", "no TXT record")


def test_check_dns_now_needs_a_post_with_a_csrf_token(two_orgs, dns_server):
    alpha, _ = two_orgs
    claim = _unverified_claim(alpha)
    client = Client(enforce_csrf_checks=True)
    client.force_login(alpha.users[Role.ADMIN])

    got = client.get(admin_url(Domain, "check_dns", claim.pk))
    forged = client.post(admin_url(Domain, "check_dns", claim.pk))

    assert (got.status_code, forged.status_code) == (405, 403)
    claim.refresh_from_db()
    assert claim.last_checked_at is None
    assert dns_server.zone.queries == []


def test_an_auditor_cannot_run_the_check(client, two_orgs, dns_server):
    alpha, _ = two_orgs
    claim = _unverified_claim(alpha)
    client.force_login(alpha.users[Role.AUDITOR])

    response = client.post(admin_url(Domain, "check_dns", claim.pk))
    client.post(
        admin_url(Domain, "changelist"), {"action": "check_dns", "_selected_action": [claim.pk]}
    )

    assert response.status_code == 403
    claim.refresh_from_db()
    assert claim.last_checked_at is None
    assert dns_server.zone.queries == []


@pytest.mark.parametrize("role", [Role.ADMIN, Role.OWNER])
def test_an_admin_of_alpha_cannot_check_bravos_domain(client, two_orgs, dns_server, role):
    alpha, bravo = two_orgs
    client.force_login(alpha.users[role])

    foreign = client.post(admin_url(Domain, "check_dns", bravo.domain.pk))
    missing = client.post(admin_url(Domain, "check_dns", 999_999))

    assert (foreign.status_code, missing.status_code) == (404, 404)
    assert "bravo" not in text(foreign).lower()
    bravo.domain.refresh_from_db()
    assert bravo.domain.last_checked_at is None
    assert dns_server.zone.queries == []


def test_the_operator_verifies_a_found_claim_with_one_click(client, two_orgs, dns_server, operator):
    alpha, _ = two_orgs
    claim = _unverified_claim(alpha)
    dns_server.txt(*_txt(claim))
    client.force_login(alpha.owner)
    client.post(admin_url(Domain, "check_dns", claim.pk))
    owner_tries = client.post(admin_url(Domain, "verify", claim.pk))
    client.force_login(operator)

    page = text(client.get(admin_url(Domain, "change", claim.pk)))
    response = client.post(admin_url(Domain, "verify", claim.pk), follow=True)

    assert owner_tries.status_code == 403
    assert 'id="verify-domain"' in page
    assert "No check has found the TXT record yet." not in page
    assert "Verified 1 domain(s)." in text(response)
    assert "on your word alone" not in text(response)
    claim.refresh_from_db()
    assert (claim.is_verified, claim.verified_by) == (True, operator)
    assert claim.verified_at is not None
    assert 'id="verify-domain"' not in text(response)


def test_the_operators_verify_action_records_who_and_warns_without_a_found_record(
    client, two_orgs, operator
):
    alpha, _ = two_orgs
    claim = _unverified_claim(alpha)
    client.force_login(operator)

    response = client.post(
        admin_url(Domain, "changelist"),
        {"action": "verify_domains", "_selected_action": [claim.pk]},
        follow=True,
    )

    claim.refresh_from_db()
    assert (claim.is_verified, claim.verified_by) == (True, operator)
    assert "No DNS check found the TXT record of claim.alpha.test" in text(response)


def test_only_the_operator_creates_organisations(client, two_orgs, operator):
    alpha, _ = two_orgs
    data = {
        "name": "Charlie",
        "slug": "charlie",  # and "is_active" left unticked
        "domains-TOTAL_FORMS": "0",
        "domains-INITIAL_FORMS": "0",
        "domains-MIN_NUM_FORMS": "0",
        "domains-MAX_NUM_FORMS": "1000",
    }
    client.force_login(alpha.owner)
    assert client.get(admin_url(Organization, "add")).status_code == 403
    assert client.post(admin_url(Organization, "add"), data).status_code == 403
    assert not Organization.objects.filter(slug="charlie").exists()

    client.force_login(operator)
    form = client.get(admin_url(Organization, "add"))
    initial = {  # every other field (plan ceilings, ...) as the form proposes it
        name: field.initial() if callable(field.initial) else field.initial
        for name, field in form.context["adminform"].form.fields.items()
        if field.initial is not None and name != "is_active"
    }
    response = client.post(admin_url(Organization, "add"), {**initial, **data})

    assert response.status_code == 302, response.context and response.context["errors"]
    charlie = Organization.objects.get(slug="charlie")
    assert (charlie.name, charlie.is_active) == ("Charlie", False)  # as the form said


def test_operator_claims_a_domain_on_the_organisation_page(client, two_orgs, operator):
    alpha, _ = two_orgs
    client.force_login(operator)
    form = client.get(admin_url(Organization, "change", alpha.organization.pk))
    fields = form.context["adminform"].form
    data = {name: fields[name].value() for name in fields.fields}
    data = {name: value for name, value in data.items() if value not in (None, False)}
    data.update(
        {
            "domains-TOTAL_FORMS": "2",
            "domains-INITIAL_FORMS": "1",
            "domains-MIN_NUM_FORMS": "0",
            "domains-MAX_NUM_FORMS": "1000",
            "domains-0-id": alpha.domain.pk,
            "domains-0-organization": alpha.organization.pk,
            "domains-0-name": alpha.domain.name,
            "domains-0-is_verified": "on",
            "domains-1-organization": alpha.organization.pk,
            "domains-1-name": "second.alpha.test",
        }
    )

    response = client.post(admin_url(Organization, "change", alpha.organization.pk), data)

    assert response.status_code == 302, response.context and response.context["errors"]
    second = Domain.objects.get(name="second.alpha.test")
    assert (second.organization, second.is_verified) == (alpha.organization, False)


# --- the organisation switcher -----------------------------------------------------------


@pytest.fixture
def two_org_user(two_orgs):
    """Alpha's admin, also an auditor of Bravo."""
    alpha, bravo = two_orgs
    user = alpha.users[Role.ADMIN]
    MembershipFactory(organization=bravo.organization, user=user, role=Role.AUDITOR)
    return user


def test_switcher_offers_both_orgs_and_switching_changes_the_rows(client, two_orgs, two_org_user):
    alpha, bravo = two_orgs
    client.force_login(two_org_user)

    index = client.get(reverse("admin:index"))
    in_alpha = client.get(admin_url(Domain, "changelist"))
    switched = switch(client, bravo.organization)
    in_bravo = client.get(admin_url(Domain, "changelist"))

    assert list(index.context["switchable_organizations"]) == [
        alpha.organization,
        bravo.organization,
    ]
    for organization in (alpha.organization, bravo.organization):
        assert f'<option value="{organization.pk}"' in text(index)
    assert [domain.name for domain in in_alpha.context["cl"].result_list] == ["alpha.test"]
    assert switched.status_code == 302
    assert switched["Location"] == reverse("admin:index")
    assert client.session[ACTIVE_ORGANIZATION_SESSION_KEY] == bravo.organization.pk
    assert [domain.name for domain in in_bravo.context["cl"].result_list] == ["bravo.test"]
    assert in_bravo.context["active_role"] == Role.AUDITOR  # their role in Bravo, not Alpha's
    assert admin_url(Membership, "add") not in text(client.get(admin_url(Membership, "changelist")))


@pytest.mark.parametrize("role", [None, Role.MEMBER], ids=["not-a-member", "plain-member"])
def test_switching_to_an_org_the_user_cannot_administer_is_404(
    client, two_orgs, two_org_user, role
):
    _, bravo = two_orgs
    charlie = OrganizationFactory(name="Charlie Org", slug="charlie")
    if role is not None:
        MembershipFactory(organization=charlie, user=two_org_user, role=role)
    client.force_login(two_org_user)
    switch(client, bravo.organization)

    response = switch(client, charlie)

    assert response.status_code == 404
    assert client.session[ACTIVE_ORGANIZATION_SESSION_KEY] == bravo.organization.pk
    in_bravo = client.get(admin_url(Domain, "changelist"))
    assert [domain.name for domain in in_bravo.context["cl"].result_list] == ["bravo.test"]


@pytest.mark.parametrize("wanted", ["", "nonsense", "999999"])
def test_a_member_cannot_switch_to_all_or_to_garbage(client, two_orgs, wanted):
    alpha, _ = two_orgs
    client.force_login(alpha.owner)

    response = client.post(reverse("admin:switch_organization"), {"organization": wanted})

    assert response.status_code == 404
    assert ACTIVE_ORGANIZATION_SESSION_KEY not in client.session


def test_switching_needs_a_post(client, two_orgs):
    alpha, bravo = two_orgs
    client.force_login(alpha.owner)

    response = client.get(
        reverse("admin:switch_organization"), {"organization": bravo.organization.pk}
    )

    assert response.status_code == 405
    assert ACTIVE_ORGANIZATION_SESSION_KEY not in client.session


def test_operator_sees_all_orgs_or_only_the_active_one(client, two_orgs, operator):
    alpha, bravo = two_orgs
    client.force_login(operator)

    everything = client.get(admin_url(Domain, "changelist"))
    switch(client, alpha.organization)
    only_alpha = client.get(admin_url(Domain, "changelist"))
    memberships_alpha = client.get(admin_url(Membership, "changelist"))
    switch(client, None)
    everything_again = client.get(admin_url(Domain, "changelist"))

    assert "All organisations (operator)" in text(everything)
    assert {d.name for d in everything.context["cl"].result_list} >= {"alpha.test", "bravo.test"}
    assert "Bravo Org" in text(everything).split('id="changelist"')[1]  # the organisation column
    assert [d.name for d in only_alpha.context["cl"].result_list] == ["alpha.test"]
    assert {m.organization for m in memberships_alpha.context["cl"].result_list} == {
        alpha.organization
    }
    assert ACTIVE_ORGANIZATION_SESSION_KEY not in client.session
    assert {d.name for d in everything_again.context["cl"].result_list} >= {
        "alpha.test",
        "bravo.test",
    }
    assert bravo.organization.name in text(everything_again)


# --- the organisation's Gemini key and the change history --------------------------------


def test_owner_replaces_the_gemini_key_and_it_is_never_shown_again(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.owner)
    url = f"/admin/tenants/geminicredential/{alpha.credential.pk}/change/"

    response = client.post(url, {"api_key": "test-owner-set-key-9876"})

    assert response.status_code == 302
    page = client.get(url).content.decode()
    assert "test-owner-set-key" not in page
    assert "9876" in page  # the last four, only


@pytest.mark.parametrize("role", [Role.ADMIN, Role.AUDITOR])
def test_only_owners_touch_the_gemini_key(client, two_orgs, role):
    alpha, _ = two_orgs
    client.force_login(alpha.users[role])
    url = f"/admin/tenants/geminicredential/{alpha.credential.pk}/change/"

    page = client.get(url)
    refused = client.post(url, {"api_key": "test-not-allowed-0000"})

    assert page.status_code == 200
    assert 'name="api_key"' not in page.content.decode()
    assert refused.status_code == 403
    assert gemini_api_key_for(organization=alpha.organization) == "alpha-gemini-key-0000"


def test_history_shows_the_policy_change_trail(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.AUDITOR])

    page = client.get(f"/admin/clients/clientapp/{alpha.client_app.pk}/history/")

    assert page.status_code == 200
    rows = page.context["changes"]
    assert [change.action for change in rows] == ["create"]
    assert rows[0].actor_label == alpha.owner.email


def test_the_operators_all_organisations_view_is_read_only(client, two_orgs, operator):
    client.force_login(operator)
    client.post("/admin/switch-organization/", {"organization": ""})

    changelist = client.get("/admin/policies/liveconstraintprofile/")
    add = client.get("/admin/policies/liveconstraintprofile/add/")

    assert changelist.status_code == 200
    assert {"alpha-voice", "bravo-voice"} <= {p.slug for p in changelist.context["cl"].result_list}
    assert add.status_code == 403


# --- invitations that reach people (issue 18) -----------------------------------------------


def invite(client, email="grace@partner.test", role=Role.ADMIN, **expiry):
    data = {"email": email, "role": role, **(expiry or expiry_fields())}
    return client.post(admin_url(Invitation, "add"), data, follow=True)


def shown_messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_owner_invites_and_the_invitee_gets_the_sign_in_link_by_email(client, two_orgs, mailoutbox):
    alpha, _ = two_orgs
    client.force_login(alpha.owner)

    response = invite(client)

    invitation = Invitation.objects.get(email="grace@partner.test")
    link = "http://testserver/accounts/login/"  # no PORTAL_URL: the owner's own address
    (mail,) = mailoutbox
    assert mail.to == ["grace@partner.test"] and link in mail.body
    assert (invitation.send_count, invitation.last_sent_at is not None) == (1, True)
    assert response.redirect_chain[-1][0] == admin_url(Invitation, "changelist")
    sent = shown_messages(response)[-1]
    assert sent.startswith("Invitation e-mailed to grace@partner.test.")
    assert f'<code id="invitation-link-{invitation.pk}">{link}</code>' in sent
    assert f'data-copy-target="invitation-link-{invitation.pk}"' in sent
    assert sent in text(response)  # shown as markup, not escaped
    assert "ephemera/copy.js" in text(response)  # the copy button works on this page


def test_portal_url_names_the_link_when_set(client, two_orgs, mailoutbox, settings):
    alpha, _ = two_orgs
    settings.PORTAL_URL = "https://ephemera.example.com"
    client.force_login(alpha.owner)

    response = invite(client)

    assert "https://ephemera.example.com/accounts/login/" in mailoutbox[0].body
    assert "https://ephemera.example.com/accounts/login/" in shown_messages(response)[-1]


def test_a_mail_server_that_is_down_still_creates_the_invitation_and_shows_the_link(
    client, two_orgs, mailoutbox, settings
):
    alpha, _ = two_orgs
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 9  # discard: nothing listens
    settings.EMAIL_HOST_PASSWORD = "smtp-pass-1a2b3c"
    client.force_login(alpha.owner)

    response = invite(client)

    assert response.status_code == 200
    invitation = Invitation.objects.get(email="grace@partner.test")
    assert (invitation.status, invitation.send_count) == ("pending", 0)
    warning = shown_messages(response)[-1]
    assert warning.startswith(
        "The invitation for grace@partner.test is saved, but the e-mail could not be sent"
    )
    assert "http://testserver/accounts/login/</code>" in warning
    assert "smtp-pass-1a2b3c" not in text(response)


def test_a_portal_without_email_tells_the_owner_to_hand_the_link_over(client, two_orgs, settings):
    alpha, _ = two_orgs
    settings.EMAIL_BACKEND = "django.core.mail.backends.dummy.EmailBackend"
    client.force_login(alpha.owner)

    response = invite(client)

    assert shown_messages(response)[-1].startswith(
        "This portal does not send e-mail, so nothing was sent."
    )
    assert Invitation.objects.get(email="grace@partner.test").send_count == 0


def test_an_expiry_in_the_past_is_a_form_error_not_a_server_error(client, two_orgs, mailoutbox):
    alpha, _ = two_orgs
    client.force_login(alpha.owner)

    response = invite(client, **expiry_fields(days=-1))

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["expires_at"] == [
        "This expiry has already passed: pick a date and time in the future."
    ]
    assert not Invitation.objects.filter(email="grace@partner.test").exists()
    assert mailoutbox == []


def test_inviting_a_member_links_to_their_membership_instead(client, two_orgs, mailoutbox):
    alpha, _ = two_orgs
    client.force_login(alpha.owner)

    response = invite(client, email="auditor@alpha.test")

    (error,) = response.context["adminform"].form.errors["email"]
    assert "already a member of Alpha Org, as Auditor" in error
    assert f'href="{admin_url(Membership, "change", membership_of(alpha, Role.AUDITOR).pk)}"' in (
        text(response)
    )
    assert mailoutbox == []


def test_the_invitation_page_shows_its_link_and_the_owners_buttons(client, two_orgs):
    alpha, _ = two_orgs
    url = admin_url(Invitation, "change", alpha.invitation.pk)

    client.force_login(alpha.owner)
    owner_page = text(client.get(url))
    client.force_login(alpha.users[Role.AUDITOR])
    auditor_page = text(client.get(url))

    for page in (owner_page, auditor_page):
        assert ">http://testserver/accounts/login/</code>" in page
        assert "Not e-mailed yet." in page
    assert admin_url(Invitation, "resend", alpha.invitation.pk) in owner_page
    assert admin_url(Invitation, "revoke", alpha.invitation.pk) in owner_page
    assert 'id="resend-invitation"' not in auditor_page
    assert 'id="revoke-invitation"' not in auditor_page


def test_owner_sends_an_invitation_again_with_the_button(client, two_orgs, mailoutbox):
    alpha, _ = two_orgs
    client.force_login(alpha.owner)

    response = client.post(admin_url(Invitation, "resend", alpha.invitation.pk), follow=True)

    assert response.redirect_chain[0] == (admin_url(Invitation, "change", alpha.invitation.pk), 302)
    assert [mail.to for mail in mailoutbox] == [["invitee@alpha.test"]]
    alpha.invitation.refresh_from_db()
    assert alpha.invitation.send_count == 1
    assert "E-mailed 1 time, last on" in text(response)
    assert shown_messages(response)[-1].startswith("Invitation e-mailed to invitee@alpha.test.")
    change = PolicyChange.objects.filter(object_type="tenants.invitation").latest("pk")
    assert (change.action, change.actor, change.after["send_count"]) == (
        "update",
        alpha.owner,
        1,
    )


def test_sending_again_within_minutes_says_nothing_was_sent(client, two_orgs, mailoutbox):
    alpha, _ = two_orgs
    client.force_login(alpha.owner)
    client.post(admin_url(Invitation, "resend", alpha.invitation.pk))

    response = client.post(admin_url(Invitation, "resend", alpha.invitation.pk), follow=True)

    assert len(mailoutbox) == 1
    assert shown_messages(response)[-1].startswith(
        "Nothing was sent: the invitation for invitee@alpha.test was e-mailed less than 5 "
        "minutes ago, or 5 times already."
    )
    assert "E-mailed 1 time, last on" in text(response)


def test_a_revoked_invitation_is_not_sent_again(client, two_orgs, mailoutbox):
    alpha, _ = two_orgs
    Invitation.objects.filter(pk=alpha.invitation.pk).update(revoked_at=timezone.now())
    client.force_login(alpha.owner)

    response = client.post(admin_url(Invitation, "resend", alpha.invitation.pk), follow=True)

    assert mailoutbox == []
    assert shown_messages(response)[-1] == (
        "This invitation is revoked, so it cannot be sent again. "
        "Invite invitee@alpha.test anew instead."
    )


def test_owner_revokes_an_invitation_with_the_button(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.owner)

    response = client.post(admin_url(Invitation, "revoke", alpha.invitation.pk), follow=True)

    alpha.invitation.refresh_from_db()
    assert alpha.invitation.status == "revoked"
    assert shown_messages(response)[-1].startswith("Revoked: signing in as invitee@alpha.test")
    assert "This invitation is <strong>revoked</strong>" in text(response)
    change = PolicyChange.objects.filter(object_type="tenants.invitation").latest("pk")
    assert (change.action, change.actor) == ("update", alpha.owner)
    assert change.after["revoked_at"] is not None


@pytest.mark.parametrize("role", [Role.ADMIN, Role.AUDITOR])
def test_only_owners_resend_or_revoke(client, two_orgs, mailoutbox, role):
    alpha, _ = two_orgs
    client.force_login(alpha.users[role])

    refused = [
        client.post(admin_url(Invitation, "resend", alpha.invitation.pk)),
        client.post(admin_url(Invitation, "revoke", alpha.invitation.pk)),
    ]

    assert [response.status_code for response in refused] == [403, 403]
    alpha.invitation.refresh_from_db()
    assert (alpha.invitation.status, alpha.invitation.send_count) == ("pending", 0)
    assert mailoutbox == []


def test_resend_and_revoke_take_a_post_with_csrf_and_the_active_orgs_rows_only(
    client, two_orgs, mailoutbox
):
    alpha, bravo = two_orgs
    client.force_login(alpha.owner)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alpha.owner)

    answers = [
        client.get(admin_url(Invitation, "resend", alpha.invitation.pk)).status_code,
        client.get(admin_url(Invitation, "revoke", alpha.invitation.pk)).status_code,
        strict.post(admin_url(Invitation, "resend", alpha.invitation.pk)).status_code,
        strict.post(admin_url(Invitation, "revoke", alpha.invitation.pk)).status_code,
        client.post(admin_url(Invitation, "resend", bravo.invitation.pk)).status_code,
        client.post(admin_url(Invitation, "revoke", bravo.invitation.pk)).status_code,
    ]

    assert answers == [405, 405, 403, 403, 404, 404]
    for invitation in (alpha.invitation, bravo.invitation):
        invitation.refresh_from_db()
        assert (invitation.status, invitation.send_count) == ("pending", 0)
    assert mailoutbox == []


# --- roles explained, and the members list (issue 18) ----------------------------------------


def test_members_list_shows_joined_last_sign_in_and_what_each_role_may_do(client, two_orgs):
    alpha, _ = two_orgs
    signed_in = timezone.now() - timedelta(hours=5)
    User = type(alpha.owner)
    User.objects.filter(pk=alpha.users[Role.ADMIN].pk).update(last_login=signed_in)
    client.force_login(alpha.users[Role.AUDITOR])  # force_login stamps the auditor's last_login

    response = client.get(admin_url(Membership, "changelist"))

    page = text(response)
    assert 'class="sortable column-joined">' in page
    assert 'class="sortable column-last_sign_in">' in page
    rows = {membership.user.email: membership for membership in response.context["cl"].result_list}
    admin_row = page.split("admin@alpha.test")[1].split("</tr>")[0]
    assert dateformat_admin(signed_in) in admin_row
    member_row = page.split("member@alpha.test")[1].split("</tr>")[0]
    assert "never" in member_row
    assert rows["member@alpha.test"].user.last_login is None
    for role in Role:
        assert f"<dt>{role.label}</dt>" in page
    assert "invites people, changes roles, removes members" in page


def dateformat_admin(moment) -> str:
    from django.utils import formats

    return formats.localize(timezone.template_localtime(moment))


def test_membership_change_form_explains_the_roles(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.owner)

    page = text(client.get(admin_url(Membership, "change", membership_of(alpha, Role.MEMBER).pk)))

    assert '<ul class="role-help">' in page
    assert "<li><strong>Auditor</strong>: Reads everything here" in page


def test_invitation_form_explains_the_roles(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.owner)

    page = text(client.get(admin_url(Invitation, "add")))

    assert "<li><strong>Member</strong>: Signs in with Google" in page
    assert "At most 30 days ahead." in page


# --- the operator's view of the platform (issue 18, item 7) ----------------------------------


def test_organisations_list_shows_members_tokens_issued_today_and_status(
    client, two_orgs, operator, clock
):
    alpha, bravo = two_orgs
    now = clock.now
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    for requested_at, outcome in [
        (now, TokenGrant.Outcome.ISSUED),
        (now, TokenGrant.Outcome.ISSUED),
        (now, TokenGrant.Outcome.DENIED_QUOTA),  # asked for, not issued
        (midnight - timedelta(seconds=1), TokenGrant.Outcome.ISSUED),  # yesterday
    ]:
        TokenGrantFactory(
            organization=alpha.organization, requested_at=requested_at, outcome=outcome
        )
    Organization.objects.filter(pk=bravo.organization.pk).update(is_active=False)
    client.force_login(operator)

    response = client.get(admin_url(Organization, "changelist"))

    rows = {org.slug: org for org in response.context["cl"].result_list}
    assert (rows["alpha"].member_count, rows["alpha"].tokens_issued) == (4, 2)
    assert (rows["bravo"].member_count, rows["bravo"].tokens_issued) == (4, 0)
    page = text(response)
    for column in ("status", "member_count", "tokens_issued_today"):
        assert f'class="sortable column-{column}">' in page
    table = page.split('id="result_list"')[1]
    bravo_row = table.split("Bravo Org</a>")[1].split("</tr>")[0]
    assert '<td class="field-status">inactive</td>' in bravo_row
    assert '<td class="field-member_count">4</td>' in bravo_row
    alpha_row = table.split("Alpha Org</a>")[1].split("</tr>")[0]
    assert '<td class="field-tokens_issued_today">2</td>' in alpha_row


def test_organisations_list_costs_the_same_queries_for_any_number_of_rows(
    client, two_orgs, operator
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.force_login(operator)
    client.get(admin_url(Organization, "changelist"))  # session and caches warmed
    with CaptureQueriesContext(connection) as two:
        client.get(admin_url(Organization, "changelist"))
    for n in range(5):
        OrganizationFactory(name=f"Extra {n}", slug=f"extra-{n}")
    with CaptureQueriesContext(connection) as seven:
        client.get(admin_url(Organization, "changelist"))

    assert len(seven) == len(two)


def test_platform_internals_leave_the_index_unless_the_operator_asks(client, operator):
    client.force_login(operator)
    internals = ["auth", "sites", "account", "socialaccount"]

    index = client.get(reverse("admin:index"))
    asked = client.get(reverse("admin:index"), {"internals": "1"})
    organisations = client.get(admin_url(Organization, "changelist"))

    shown = {app["app_label"] for app in index.context["app_list"]}
    assert "tenants" in shown and not shown & set(internals)
    assert set(internals) <= {app["app_label"] for app in asked.context["app_list"]}
    assert f'href="{reverse("admin:index")}?internals=1"' in text(organisations)
    assert f'href="{reverse("admin:index")}?internals=1"' in text(index)
    for name in [
        "auth_group_changelist",
        "sites_site_changelist",
        "account_emailaddress_changelist",
        "socialaccount_socialapp_changelist",
        "socialaccount_socialaccount_changelist",
        "socialaccount_socialtoken_changelist",
    ]:
        assert client.get(reverse(f"admin:{name}")).status_code == 200, name
    for app_label in internals:
        app_page = client.get(reverse("admin:app_list", args=[app_label]))
        assert app_page.status_code == 200, app_label


def test_the_internals_link_is_the_operators_alone(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.owner)

    asked = client.get(reverse("admin:index"), {"internals": "1"})
    organisations = client.get(admin_url(Organization, "changelist"))

    assert not {"auth", "sites", "socialaccount"} & {
        app["app_label"] for app in asked.context["app_list"]
    }
    assert "internals=1" not in text(organisations)
    assert "internals=1" not in text(client.get(reverse("admin:index")))
