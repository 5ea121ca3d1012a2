"""Browser journey (issue 18): an invitation that reaches its person.

An owner invites an admin in the browser; the e-mail (Django's locmem outbox: the live portal
runs in a thread of this process) carries the sign-in link the page also offers to copy; the
invitee follows it, signs in through the fake Google and lands in the organisation as Admin.
Every page is pictured at 1440×900 and 390×844 in var/artifacts/invitations/, and none may
scroll sideways on the phone or log a console error.
"""

import re

import pytest
import requests
from django.core import mail
from django.utils import timezone

from apps.tenants import services
from apps.tenants.models import Domain, Invitation, Membership, Organization, Role
from tests.journeys.support import ARTIFACTS, Screenshots, orm

pytestmark = pytest.mark.django_db(transaction=True)

ORG, SLUG, DOMAIN = "Initech", "initech", "initech.test"
OWNER = "peter@initech.test"  # signs in on the verified domain, with an owner's invitation
INVITEE = "ada@partner.test"  # outside the domain: gets in by the owner's invitation alone


@pytest.fixture
def shots() -> Screenshots:
    """Its own folder: other journeys clear theirs when they start."""
    return Screenshots(ARTIFACTS.parent / "invitations")


def test_owner_invites_an_admin_who_follows_the_emailed_link(
    browsers, portal_url, google_in_browser, shots
):
    orm(_organisation_with_an_invited_owner)
    owner = browsers.open("owner")
    google_in_browser.sign_in(
        owner, portal_url, sub="peter", email=OWNER, email_verified=True, hd=DOMAIN
    )
    expect_role(owner, "Owner")

    # The form: what each role may do, next to the picker.
    owner.goto(f"{portal_url}/admin/tenants/invitation/add/")
    help_text = owner.locator("#id_role_helptext").inner_text()
    assert "Admin: Everything an auditor may, and sets up Live profiles" in help_text
    owner.fill("#id_email", INVITEE)
    owner.select_option("#id_role", label="Admin")
    shots.both_sizes(owner, "owner-invitation-form")

    owner.get_by_role("button", name="Save", exact=True).click()
    expect_message(owner, f"Invitation e-mailed to {INVITEE}.")
    assert owner.url == f"{portal_url}/admin/tenants/invitation/"

    # The e-mail and the page name the same link.
    (sent,) = [message for message in mail.outbox if message.to == [INVITEE]]
    emailed_link = re.search(r"http://\S+/accounts/login/", sent.body).group(0)
    assert emailed_link == f"{portal_url}/accounts/login/"
    assert f"{OWNER} invited you to {ORG} on Ephemera, as Admin." in sent.body
    shown = owner.locator("ul.messagelist code[id^=invitation-link-]")
    assert shown.inner_text() == emailed_link
    owner.locator("ul.messagelist").get_by_role("button", name="Copy link").click()
    owner.locator("ul.messagelist").get_by_role("button", name="Copied").wait_for()
    assert owner.evaluate("navigator.clipboard.readText()") == emailed_link
    shots.both_sizes(owner, "owner-invitation-sent-copy-link")

    # The invitation's own page: the link again, "send again" (not within minutes of the
    # last e-mail: the portal is nobody's relay) and "revoke".
    owner.locator("#result_list tbody tr", has_text=INVITEE).locator("th a").click()
    owner.get_by_role("button", name="Send the e-mail again").click()
    expect_message(owner, f"Nothing was sent: the invitation for {INVITEE} was e-mailed less")
    assert "E-mailed 1 time" in owner.locator("#invitation-panel").inner_text()
    assert len([message for message in mail.outbox if message.to == [INVITEE]]) == 1
    shots.both_sizes(owner, "owner-invitation-page")

    # The invitee follows the e-mailed link and signs in with Google.
    invitee = browsers.open("invitee")
    requests.put(
        f"{google_in_browser.base_url}/users/ada",
        json={"email": INVITEE, "email_verified": True},
        timeout=5,
    ).raise_for_status()
    invitee.goto(emailed_link)
    invitee.locator("#google-sign-in").click()
    invitee.wait_for_url(f"{google_in_browser.base_url}/**")
    invitee.locator("input[name=sub]").fill("ada")
    invitee.get_by_role("button", name="Authorize").click()
    invitee.wait_for_url(f"{portal_url}/admin/")
    expect_role(invitee, "Admin")
    shots.both_sizes(invitee, "invitee-landed-as-admin")

    # Back with the owner: the invitation is used up, the admin is a member.
    owner.goto(f"{portal_url}/admin/tenants/invitation/")
    row = owner.locator("#result_list tbody tr", has_text=INVITEE).inner_text()
    assert "accepted" in row and "1×" in row, row
    shots.both_sizes(owner, "owner-invitation-list")
    owner.goto(f"{portal_url}/admin/tenants/membership/")
    members = owner.locator("#result_list tbody").inner_text()
    assert INVITEE in members and "Admin" in members
    shots.both_sizes(owner, "owner-members-list")

    role = orm(lambda: Membership.objects.get(organization__slug=SLUG, user__email=INVITEE).role)
    assert role == Role.ADMIN
    assert orm(lambda: Invitation.objects.get(email=INVITEE).status) == "accepted"
    assert browsers.console.errors == [], "\n".join(browsers.console.errors)


def _organisation_with_an_invited_owner() -> None:
    organization = Organization.objects.create(name=ORG, slug=SLUG)
    Domain.objects.create(
        organization=organization, name=DOMAIN, is_verified=True, verified_at=timezone.now()
    )
    services.invitation_create(
        organization=organization, email=OWNER, role=Role.OWNER, invited_by=None
    )


# --- helpers ------------------------------------------------------------------------------


def expect_message(page, text: str) -> None:
    from playwright.sync_api import expect

    expect(page.locator("ul.messagelist")).to_contain_text(text)


def expect_role(page, role: str) -> None:
    assert page.url.endswith("/admin/"), page.url
    assert page.locator("#org-switcher-select option:checked").inner_text() == ORG
    assert page.locator("#org-switcher .org-role").text_content() == role
