"""Browser journey (issue 18, item 6): signing in without surprises.

The demo seed's users exist before anyone signs in with Google. Signing in as one of them
lands signed in as that user (never allauth's sign-up form); the admin's "Log out" and the
site's "Sign out" end on the same sign-in page; saying no at Google, or a Google account the
linking rule refuses, ends on a portal page with a way back. The sign-in page and those pages
are photographed at 1440×900 and 390×844 and must not scroll sideways on the phone.
"""

import pytest
import requests
from playwright.sync_api import expect

from apps.tenants.models import Membership, Role, User
from portal.demo import demo_seed
from tests.journeys.support import orm

pytestmark = pytest.mark.django_db(transaction=True)

OWNER, MEMBER, DOMAIN = "owner@demo.example", "member@demo.example", "demo.example"


def test_seeded_people_sign_in_with_google_and_out_again(
    browsers, portal_url, google_in_browser, screenshots
):
    orm(demo_seed, password="journey-demo-password")
    users_before = orm(User.objects.count)

    sign_in_page_fits_desktop_and_phone(browsers.open("visitor"), portal_url, screenshots)
    owner_signs_in_and_logs_out_of_the_admin(
        browsers.open("owner"), portal_url, google_in_browser, screenshots
    )
    member_signs_in_and_signs_out_of_the_site(
        browsers.open("member"), portal_url, google_in_browser, screenshots
    )
    someone_says_no_at_google(browsers.open("canceller"), portal_url, screenshots)
    a_google_account_the_rule_refuses(
        browsers.open("stranger"), portal_url, google_in_browser, screenshots
    )

    # Every sign-in went to an existing user: no second user for any address.
    assert orm(User.objects.count) == users_before
    linked = orm(
        lambda: dict(
            User.objects.filter(socialaccount__provider="google").values_list(
                "email", "socialaccount__uid"
            )
        )
    )
    assert linked == {OWNER: "google-owner", MEMBER: "google-member"}
    roles = orm(lambda: dict(Membership.objects.values_list("user__email", "role")))
    assert (roles[OWNER], roles[MEMBER]) == (Role.OWNER, Role.MEMBER)
    assert browsers.console.errors == [], "\n".join(browsers.console.errors)


def sign_in_page_fits_desktop_and_phone(page, portal_url, shots):
    page.goto(f"{portal_url}/accounts/login/")
    button = page.locator("#google-sign-in")
    expect(button).to_have_text("Sign in with Google")
    expect(button.locator("svg.gsi-button-logo")).to_be_visible()
    assert page.evaluate("document.querySelector('link[rel=icon]').href").endswith("favicon.svg")
    shots.both_sizes(page, "sign-in-page")


def owner_signs_in_and_logs_out_of_the_admin(page, portal_url, google, shots):
    """The seeded owner, whose address Google's Workspace vouches for, is that same user."""
    google.sign_in(
        page,
        portal_url,
        sub="google-owner",
        email=OWNER,
        email_verified=True,
        hd=DOMAIN,
        name="Olive Owner",
        given_name="Olive",
        family_name="Owner",
    )
    expect(page.locator("ul.messagelist")).to_contain_text("Signed in as Olive Owner.")
    expect(page.locator("#user-tools")).to_contain_text("Welcome, Olive")
    expect(page.locator("#org-switcher .org-role")).to_have_text("Owner")
    shots.take(page, "owner-signed-in-admin")

    page.locator("#logout-form button").click()
    page.wait_for_url(f"{portal_url}/accounts/login/")
    expect(page.locator("ul.messages")).to_contain_text("You have signed out.")
    shots.take(page, "owner-logged-out-of-admin")


def member_signs_in_and_signs_out_of_the_site(page, portal_url, google, shots):
    google.sign_in(
        page,
        portal_url,
        sub="google-member",
        next_path="/",
        email=MEMBER,
        email_verified=True,
        hd=DOMAIN,
        name="Max Member",
    )
    page.wait_for_url(f"{portal_url}/")
    expect(page.locator("ul.messages")).to_contain_text("Signed in as Max Member.")
    expect(page.locator("h1")).to_have_text("Demo Organisation")

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{portal_url}/accounts/login/")  # where the admin's "Log out" ends
    expect(page.locator("ul.messages")).to_contain_text("You have signed out.")
    shots.take(page, "member-signed-out-of-site")


def someone_says_no_at_google(page, portal_url, shots):
    page.goto(f"{portal_url}/accounts/login/")
    page.locator("#google-sign-in").click()
    page.get_by_role("button", name="Deny").click()
    page.wait_for_url(f"{portal_url}/accounts/3rdparty/login/cancelled/")
    expect(page.locator("h1")).to_have_text("Sign-in cancelled")
    shots.both_sizes(page, "cancelled-at-google")

    page.get_by_role("link", name="Back to sign-in").click()
    page.wait_for_url(f"{portal_url}/accounts/login/")


def a_google_account_the_rule_refuses(page, portal_url, google, shots):
    """A personal Google account made on the owner's work address: Google is no authority
    for it, so it is neither linked to the owner nor made a second user."""
    claims = {"email": OWNER, "email_verified": True}  # no hd: not a Workspace account
    requests.put(f"{google.base_url}/users/google-impostor", json=claims, timeout=5)
    page.goto(f"{portal_url}/accounts/login/")
    page.locator("#google-sign-in").click()
    page.wait_for_url(f"{google.base_url}/**")
    page.locator("input[name=sub]").fill("google-impostor")
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_url(f"{portal_url}/accounts/refused/?reason=not_authoritative")
    expect(page.locator("h1")).to_have_text("Ephemera could not sign you in")
    expect(page.locator(".topbar .who")).to_have_count(0)  # not signed in
    shots.both_sizes(page, "refused-not-authoritative")
