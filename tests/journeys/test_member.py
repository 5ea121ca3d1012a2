"""Browser journey (issue 20, item 6): a member gets a token from their own page.

The demo member signs in with (fake) Google and lands on their organisation's page, which
lists the Live profiles members may use and no other: each with its model, its lock and its
windows. "Get a token" asks the API's session path and shows the sandbox's token once, with
its expiry in the browser's own time zone (the browser runs in Auckland, the server in UTC)
and what it locks; a quota that says no is shown as the API words it, with the wait it
names. The member opens a profile's client guide; another profile's guide is a 404. Every
page is photographed at 1440×900 and 390×844 and must not scroll sideways on the phone.
"""

import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect

from apps.audit.models import TokenGrant
from apps.policies import services as policy_services
from apps.policies.models import LiveConstraintProfile, LockMode
from apps.tenants.models import Organization, User
from portal.demo import DEMO_DOMAIN, DEMO_ORGANIZATION_SLUG, DEMO_PROFILE, demo_seed
from tests.conftest import well_inside_window
from tests.journeys.support import orm

pytestmark = pytest.mark.django_db(transaction=True)

MEMBER = f"member@{DEMO_DOMAIN}"
ZONE = "Pacific/Auckland"  # far from the server's UTC, so a UTC time would show
CAPTIONS = {
    "slug": "demo-captions",
    "name": "Captioned tutor",
    "description": "Written answers at a steady temperature; the client adds what it leaves open.",
    "model": "gemini-2.0-flash-live-001",
    "config": {"response_modalities": ["TEXT"], "temperature": 0.4},
    "lock_mode": LockMode.FIELDS_SET,
    "uses": 2,
    "expire_seconds": 600,
    "new_session_seconds": 120,
    "members_may_use": True,
}
BACKEND_ONLY = "demo-backend-only"  # an app's profile, closed to members


def test_a_member_gets_a_token_once_and_reads_the_guide(
    browsers, portal_url, google_in_browser, screenshots
):
    seed = orm(demo_seed, password="journey-demo-password")
    orm(extra_profiles)
    page = browsers.open("member", timezone_id=ZONE, locale="en-GB")

    google_in_browser.sign_in(
        page,
        portal_url,
        sub="google-member",
        next_path="/",
        email=MEMBER,
        email_verified=True,
        hd=DEMO_DOMAIN,
        name="Max Member",
    )
    sees_the_profiles_members_may_use(page)
    screenshots.both_sizes(page, "member-home")

    answer = gets_a_token_shown_once(page)
    screenshots.both_sizes(page, "member-token")
    member = orm(User.objects.get, email=MEMBER)
    grant = orm(TokenGrant.objects.get, public_id=answer["grant_id"])
    assert (grant.member_id, grant.end_user) == (member.pk, f"member:{member.pk}")

    a_quota_says_no(page)
    screenshots.both_sizes(page, "member-quota-refused")

    page.reload()  # shown once: nothing brings a token back
    expect(page.locator(".token-result:not([hidden])")).to_have_count(0)
    assert answer["token"] not in page.content()

    reads_the_guide(page, portal_url)
    screenshots.both_sizes(page, "member-guide")

    for slug in (BACKEND_ONLY, "no-such-profile"):
        response = page.goto(f"{portal_url}/profiles/{slug}/guide/")
        assert response.status == 404, slug
    assert seed["client_key"] not in page.content()
    # The browser logs every answer it was refused; only the refusals asked for here may show.
    asked = [f"status of 429 (Too Many Requests) ({portal_url}/api/v1/tokens)"] + [
        f"status of 404 (Not Found) ({portal_url}/profiles/{slug}/guide/)"
        for slug in (BACKEND_ONLY, "no-such-profile")
    ]
    errors = [e for e in browsers.console.errors if not any(e.endswith(a) for a in asked)]
    assert errors == [], "\n".join(errors)


def extra_profiles() -> None:
    """A second profile for members, with a field lock and a quota of one token a minute,
    and one that only apps may use."""
    organization = Organization.objects.get(slug=DEMO_ORGANIZATION_SLUG)
    captions = policy_services.profile_create(organization=organization, actor=None, **CAPTIONS)
    policy_services.quota_create(
        organization=organization,
        actor=None,
        scope="profile",
        profile=captions,
        window="minute",
        limit=1,
    )
    policy_services.profile_create(
        organization=organization,
        actor=None,
        slug=BACKEND_ONLY,
        name="Backend only",
        model="gemini-2.0-flash-live-001",
        config={},
    )


def sees_the_profiles_members_may_use(page) -> None:
    expect(page.locator("h1")).to_have_text("Demo Organisation")
    cards = page.locator("article.profile-card")
    expect(cards).to_have_count(2)
    assert cards.evaluate_all("cards => cards.map(c => c.dataset.profile)") == [
        CAPTIONS["slug"],
        DEMO_PROFILE["slug"],
    ]  # by name; the backend-only profile is not offered
    voice = page.locator(f"#profile-{DEMO_PROFILE['slug']}")
    expect(voice.locator("h3")).to_have_text(DEMO_PROFILE["name"])
    expect(voice.locator(".profile-description")).to_have_text(DEMO_PROFILE["description"])
    expect(voice.locator(".profile-lock")).to_contain_text("The whole setup")
    expect(voice.locator(".profile-windows")).to_have_text(
        "starts 1 session, new ones within 1 minute of issue; expires 30 minutes after issue."
    )
    captions = page.locator(f"#profile-{CAPTIONS['slug']}")
    expect(captions.locator(".profile-lock")).to_contain_text("Fields")
    expect(captions.locator(".locked-fields li")).to_have_text(
        ["model", "generationConfig.responseModalities", "generationConfig.temperature"]
    )
    expect(captions.locator(".profile-windows")).to_contain_text("starts 2 sessions")
    expect(page.locator("#open-admin")).to_have_count(0)  # a member has no admin


def gets_a_token_shown_once(page) -> dict:
    card = page.locator(f"#profile-{DEMO_PROFILE['slug']}")
    with page.expect_response(lambda r: r.url.endswith("/api/v1/tokens")) as answered:
        card.get_by_role("button", name="Get a token").click()
    assert answered.value.status == 201
    answer = answered.value.json()
    result = card.locator(".token-result")
    expect(result.locator(".token-value code")).to_have_text(answer["token"])
    assert answer["token"].startswith("auth_tokens/") and answer["sandbox"] is True

    expires = result.locator(".token-expires time")
    expect(expires).to_have_attribute("data-localised", ZONE)
    local = datetime.fromisoformat(answer["expire_time"]).astimezone(ZoneInfo(ZONE))
    shown = expires.inner_text()
    assert f"{local.hour}:{local:%M:%S} GMT+{local.utcoffset().seconds // 3600}" in shown, shown
    expect(result.locator(".token-expires")).to_contain_text("(in 30 minutes)")
    expect(result.locator(".token-uses")).to_have_text("starts 1 session")
    lock = result.locator(".token-lock")
    expect(lock).to_contain_text("The whole setup")
    expect(lock.locator("summary")).to_have_text(
        f"All {len(answer['locked_fields'])} setup fields are locked"
    )
    lock.locator("summary").click()  # the names, on asking: a whole setup has many
    expect(lock.locator(".locked-fields li")).to_have_text(answer["locked_fields"])
    expect(result.locator(".token-fine")).to_contain_text(f"({ZONE})")
    expect(result.locator(".token-fine")).to_contain_text("sandbox token")

    result.get_by_role("button", name="Copy").click()
    expect(result.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == answer["token"]
    return answer


def a_quota_says_no(page) -> None:
    card = page.locator(f"#profile-{CAPTIONS['slug']}")
    button = card.locator("button.get-token")
    well_inside_window(60, room=20)  # both clicks in one minute: its quota is one a minute
    with page.expect_response(lambda r: r.url.endswith("/api/v1/tokens")) as first:
        button.click()
    assert first.value.status == 201
    expect(card.locator(".locked-fields li").first).to_be_visible()
    expect(card.locator(".token-lock")).to_contain_text("generationConfig.temperature")
    expect(card.locator(".token-uses")).to_have_text("starts 2 sessions")

    with page.expect_response(lambda r: r.url.endswith("/api/v1/tokens")) as second:
        button.click()
    refused = second.value
    assert refused.status == 429
    wait = int(refused.headers["retry-after"])
    error = card.locator(".token-error[role=alert]")
    expect(error.locator(".token-error-title")).to_contain_text("A quota is used up")
    expect(error.locator(".token-error-title code")).to_have_text("quota_exceeded")
    body = refused.json()["error"]
    assert body["limit"] in body["message"]  # so the page need not say it twice
    expect(error.locator(".token-error-message")).to_have_text(body["message"])
    assert 0 < wait <= 60
    expect(error.locator(".token-error-retry")).to_have_text(re.compile(r"Try again in \d+ s\."))
    left = int(re.search(r"\d+", error.locator(".token-error-retry").inner_text()).group())
    assert 0 < left <= wait  # counting down from the wait the answer named
    expect(button).to_be_disabled()
    expect(button).to_have_text(re.compile(r"Try again in \d+ s"))
    expect(card.locator(".token-value")).to_have_count(0)  # the refusal replaced the token


def reads_the_guide(page, portal_url) -> None:
    card = page.locator(f"#profile-{DEMO_PROFILE['slug']}")
    card.get_by_role("link", name="Client guide").click()
    page.wait_for_url(f"{portal_url}/profiles/{DEMO_PROFILE['slug']}/guide/")
    expect(page.locator("h1")).to_have_text(f"Client guide: {DEMO_PROFILE['name']}")
    expect(page.locator("#guide-facts")).to_contain_text(f"{portal_url}/api/v1/tokens")
    expect(page.locator(".guide-snippet")).to_have_count(
        orm(lambda: len(guide_snippets(DEMO_PROFILE["slug"], portal_url)))
    )
    curl = page.locator("#guide-curl")
    curl.get_by_role("button", name="Copy").click()
    expect(curl.get_by_role("button", name="Copied")).to_be_visible()
    assert "$EPHEMERA_CLIENT_KEY" in page.evaluate("navigator.clipboard.readText()")


def guide_snippets(slug: str, portal_url: str) -> list:
    from apps.policies.guides import profile_guide

    profile = LiveConstraintProfile.objects.get(slug=slug)
    return profile_guide(profile=profile, portal_url=f"{portal_url}/").snippets
