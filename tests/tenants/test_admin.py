"""What each role notices in the tenant admin: what it may see, change, and where it works."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.tenants.context import ACTIVE_ORGANIZATION_SESSION_KEY
from apps.tenants.models import Domain, Invitation, Membership, Organization, Role
from apps.tenants.selectors import gemini_api_key_for
from tests.factories import DomainFactory, MembershipFactory, OrganizationFactory

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


def test_reinviting_an_address_revokes_its_open_invitation(client, two_orgs):
    alpha, bravo = two_orgs
    client.force_login(alpha.owner)

    response = client.post(
        admin_url(Invitation, "add"),
        {"email": "invitee@alpha.test", "role": Role.MEMBER, **expiry_fields()},
    )

    assert response.status_code == 302
    old, new = (
        alpha.invitation,
        Invitation.objects.exclude(pk=alpha.invitation.pk).get(
            organization=alpha.organization, email="invitee@alpha.test"
        ),
    )
    old.refresh_from_db()
    assert old.status == "revoked"
    assert (new.status, new.role, new.invited_by) == ("pending", Role.MEMBER, alpha.owner)
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
