"""Browser journey (issue 18): a new organisation's owner is told what to do next.

A fresh organisation's owner signs in with (fake) Google and finds, on the admin's home, the
onboarding checklist with nothing done and a link to each page that does a step. Then the
organisation is brought to the state `make dev`'s seed leaves (portal/demo.py) on the sandbox
upstream: the banner says tokens are not Google's, five steps are done and the first token
is what is left. Once a client backend gets a token, the checklist folds into one line. Each
view is photographed at 1440×900 and 390×844, and neither may scroll sideways on a phone.
"""

import httpx
import pytest

from apps.tenants import services as tenant_services
from apps.tenants.models import Role
from portal.demo import DEMO_DOMAIN, DEMO_ORGANIZATION_SLUG, DEMO_PROFILE, demo_seed
from tests.journeys.support import orm

pytestmark = pytest.mark.django_db(transaction=True)

ORG = "Demo Organisation"
OWNER = f"olga@{DEMO_DOMAIN}"  # the organisation's first owner, in by invitation
MEMBER = f"mia@{DEMO_DOMAIN}"  # a colleague on the domain, once the domain is verified
SANDBOX_WORDS = "Tokens are minted by the local sandbox, not Google"


def test_a_new_owner_follows_the_checklist_to_the_first_token(
    browsers, portal_url, google_in_browser, screenshots, settings, sandbox_upstream
):
    orm(fresh_organisation_with_an_invited_owner)
    settings.GEMINI_BASE_URL = ""  # first as on a real deployment: Google, no platform key
    settings.GEMINI_API_KEY = ""

    owner = browsers.open("owner")
    google_in_browser.sign_in(owner, portal_url, sub="olga", email=OWNER, email_verified=True)
    assert owner.url == f"{portal_url}/admin/"
    steps = checklist(owner)
    assert steps == {
        "domain": "todo",
        "gemini": "todo",
        "profile": "todo",
        "client_app": "todo",
        "first_token": "todo",
        "auditor": "todo",
    }
    assert owner.locator("#onboarding h2").inner_text() == f"Set up {ORG}"
    assert owner.locator(".onboarding-count").inner_text() == "0 of 6 done"
    assert owner.locator("#sandbox-banner").count() == 0
    links = step_links(owner)
    assert links["profile"] == ("Create a profile", "/admin/policies/liveconstraintprofile/add/")
    assert links["gemini"] == ("Add the key", "/admin/tenants/geminicredential/add/")
    assert links["auditor"] == ("Invite an auditor", "/admin/tenants/invitation/add/")
    assert owner.locator("[data-step=domain] .step-who").inner_text() == "For the operator"
    screenshots.both_sizes(owner, "fresh-organisation-checklist")

    owner.locator("[data-step=profile] a.step-action").click()  # the link does the step
    owner.wait_for_url(f"{portal_url}/admin/policies/liveconstraintprofile/add/")

    # The state `make dev` seeds, on the sandbox upstream with the platform's placeholder key.
    settings.GEMINI_BASE_URL = sandbox_upstream.url
    settings.GEMINI_API_KEY = "sandbox-journey-key"
    raw_key = orm(demo_seed, password="journey-demo-password")["client_key"]
    owner.goto(f"{portal_url}/admin/")
    assert checklist(owner) == {
        "domain": "done",
        "gemini": "sandbox",
        "profile": "done",
        "client_app": "done",
        "first_token": "todo",
        "auditor": "done",
    }
    assert owner.locator(".onboarding-count").inner_text() == "5 of 6 done"
    assert SANDBOX_WORDS in owner.locator("#sandbox-banner").inner_text()
    label, href = step_links(owner)["first_token"]
    assert (label, href.endswith("/guide/")) == ("Open the client guide", True)
    screenshots.both_sizes(owner, "demo-state-checklist")

    owner.locator("[data-step=first_token] a.step-action").click()
    owner.wait_for_url(f"{portal_url}{href}")
    assert SANDBOX_WORDS in owner.locator("#sandbox-banner").inner_text()  # on every page
    assert "The whole setup" in owner.locator("#guide-facts .profile-lock").inner_text()
    screenshots.both_sizes(owner, "admin-client-guide")

    answer = httpx.post(
        f"{portal_url}/api/v1/tokens",
        headers={"Authorization": f"Bearer {raw_key}"},
        json={"profile": DEMO_PROFILE["slug"], "end_user": "journey-user"},
        timeout=20,
    )
    assert (answer.status_code, answer.json()["sandbox"]) == (201, True)
    owner.goto(f"{portal_url}/admin/")
    summary = owner.locator("details#onboarding summary")
    assert f"{ORG} is set up. All 6 steps are done." in summary.inner_text()
    assert not owner.locator("details#onboarding").evaluate("details => details.open")
    assert owner.locator(".onboarding-steps").is_hidden()
    screenshots.both_sizes(owner, "set-up-line")

    member = browsers.open("member")
    google_in_browser.sign_in(
        member,
        portal_url,
        sub="mia",
        email=MEMBER,
        email_verified=True,
        hd=DEMO_DOMAIN,
        next_path="/",
    )
    assert SANDBOX_WORDS in member.locator("#sandbox-banner").inner_text()
    screenshots.both_sizes(member, "member-home-sandbox-banner")

    assert browsers.console.errors == [], "\n".join(browsers.console.errors)


def fresh_organisation_with_an_invited_owner() -> None:
    organization = tenant_services.organization_create(name=ORG, slug=DEMO_ORGANIZATION_SLUG)
    tenant_services.invitation_create(
        organization=organization, email=OWNER, role=Role.OWNER, invited_by=None
    )


def checklist(page) -> dict[str, str]:
    return dict(
        page.locator("#onboarding li[data-step]").evaluate_all(
            "items => items.map(item => [item.dataset.step, item.dataset.state])"
        )
    )


def step_links(page) -> dict[str, tuple[str, str]]:
    return {
        key: (label, href)
        for key, label, href in page.locator(
            "#onboarding li[data-step] a.step-action"
        ).evaluate_all(
            "links => links.map(a => [a.closest('li').dataset.step, a.innerText, "
            "a.getAttribute('href')])"
        )
    }
