"""Browser journey (issue 19, item 1): a dashboard that is current and explorable.

An organisation has a month of history, most of it counted by `rollup_usage`, the last hours
not yet. An auditor signs in with Google (by invitation), reads the dashboard, a backend gets
a token through the API with its client key, and the dashboard counts it at once — no task
runs in between. The auditor switches to 24 hours, clicks the current hour's bar and lands on
the grants list filtered to that hour, showing that grant. A second organisation's grants,
written at the same moments, never show. Screenshots at 1440×900 and 390×844 in
var/artifacts/audit-dashboard/; at 390 px no page scrolls sideways.
"""

import random
from datetime import UTC, timedelta

import pytest
import requests
from django.utils import timezone

from apps.audit import services as audit_services
from apps.audit.models import TokenGrant, UsageRollupCursor
from apps.clients import services as client_services
from apps.policies import services as policy_services
from apps.tenants.models import Role
from tests.conftest import well_inside_window
from tests.factories import DomainFactory, InvitationFactory, OrganizationFactory
from tests.journeys.support import ARTIFACTS, Screenshots, orm

pytestmark = pytest.mark.django_db(transaction=True)

ORG, SLUG, DOMAIN = "Globex", "globex", "globex.test"
AUDITOR = "audrey@globex.test"
PROFILE = "globex-voice"
OTHER_ORG = "Initrode"
END_USER = "journey-caller"


@pytest.fixture
def dashboard_screenshots() -> Screenshots:
    """A folder of this journey's own: another journey's run empties only its own."""
    return Screenshots(ARTIFACTS.parent / "audit-dashboard")


def an_organisation_with_a_month_of_history() -> str:
    """Globex (apps, keys, profiles, 30 days of grants) and Initrode beside it; returns the
    raw client key Globex's backend uses."""
    rng = random.Random(19)
    now = timezone.now().astimezone(UTC)
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    organization = OrganizationFactory(name=ORG, slug=SLUG)
    DomainFactory(organization=organization, name=DOMAIN)
    InvitationFactory(organization=organization, email=AUDITOR, role=Role.AUDITOR)
    profiles = [
        policy_services.profile_create(
            organization=organization,
            actor=None,
            slug=slug,
            name=name,
            model="gemini-2.0-flash-live-001",
            config={"response_modalities": ["AUDIO"]},
        )
        for slug, name in [(PROFILE, "Globex voice"), ("globex-support", "Support desk")]
    ]
    apps, keys = [], []
    for name, label in [("Globex web", "web backend"), ("Globex kiosk", "kiosk fleet")]:
        app = client_services.client_app_create(
            organization=organization, actor=None, name=name, allowed_profiles=profiles
        )
        key, raw = client_services.client_key_create(
            organization=organization, client_app=app, actor=None, label=label
        )
        apps.append(app)
        keys.append((key, raw))
    other = OrganizationFactory(name=f"{OTHER_ORG} Org", slug="initrode")
    other_app = client_services.client_app_create(
        organization=other, actor=None, name=f"{OTHER_ORG} app"
    )

    moments = [
        this_hour - timedelta(days=day, seconds=rng.uniform(0, 86400))
        for day in range(1, 30)
        for _ in range(rng.randint(3, 14))
    ]
    # The last day, hour by hour, up to (not into) the current hour.
    moments += [
        this_hour - timedelta(hours=hour, seconds=rng.uniform(0, 3599))
        for hour in range(1, 24)
        for _ in range(rng.randint(0, 4))
    ]
    outcomes = ["issued"] * 12 + ["denied_quota", "denied_policy", "upstream_error"]
    users = [f"learner-{n:03d}" for n in range(1, 40)]
    grants = []
    for moment in sorted(moments):
        app_index = 0 if rng.random() < 0.7 else 1
        outcome = rng.choice(outcomes)
        grants.append(
            TokenGrant(
                organization=organization,
                client_app=apps[app_index],
                client_key_prefix=keys[app_index][0].prefix,
                profile=rng.choice(profiles),
                end_user=rng.choice(users[: rng.randint(3, len(users))]),
                outcome=outcome,
                requested_at=moment,
                issued_at=moment if outcome == "issued" else None,
                expire_time=moment + timedelta(minutes=30) if outcome == "issued" else None,
                lifecycle="expired" if outcome == "issued" else "",
            )
        )
        grants.append(  # Initrode's at the same moment: never on Globex's pages
            TokenGrant(
                organization=other,
                client_app=other_app,
                end_user=f"{OTHER_ORG.lower()}-user",
                outcome="issued",
                requested_at=moment,
            )
        )
    TokenGrant.objects.bulk_create(grants)
    # Beat last ran three hours ago: the newest hours are not rolled up yet.
    audit_services.usage_rollup(tally=audit_services.RunTally(), now=now - timedelta(hours=3))
    assert UsageRollupCursor.objects.filter(organization=organization).exists()
    return keys[0][1]


def issue_a_token(portal_url: str, raw_key: str) -> dict:
    response = requests.post(
        f"{portal_url}/api/v1/tokens",
        json={"profile": PROFILE, "end_user": END_USER},
        headers={"Authorization": f"Bearer {raw_key}"},
        timeout=20,
    )
    assert response.status_code == 201, response.text
    return response.json()


def number(page, selector: str) -> int:
    return int(page.locator(selector).inner_text().replace(",", ""))


def test_the_dashboard_counts_a_new_token_at_once_and_leads_to_it(
    browsers, portal_url, google_in_browser, dashboard_screenshots
):
    shots = dashboard_screenshots
    raw_key = orm(an_organisation_with_a_month_of_history)
    page = browsers.open("auditor")
    google_in_browser.sign_in(
        page, portal_url, sub="audrey", email=AUDITOR, email_verified=True, hd=DOMAIN
    )

    # From the first look to the newest bar's click, one clock hour: its bar holds one token.
    well_inside_window(3600, room=120)
    page.locator("#nav-dashboard").click()
    page.wait_for_url(f"{portal_url}/admin/audit/tokengrant/dashboard/")
    issued_before = number(page, "#total-issued")
    assert issued_before > 0 and number(page, "#active-now") == 0
    assert page.locator("#range-30d").get_attribute("aria-current") == "page"
    assert OTHER_ORG not in page.content()
    shots.both_sizes(page, "dashboard-30-days")

    # A backend gets a token with its client key; no task runs before the auditor looks.
    body = issue_a_token(portal_url, raw_key)
    page.reload()
    assert number(page, "#total-issued") == issued_before + 1
    assert number(page, "#active-now") == 1
    assert "can still open a session" in page.locator("#active-detail").inner_text()
    shots.both_sizes(page, "dashboard-counts-the-new-token")

    page.locator("#range-24h").click()
    page.wait_for_url("**/dashboard/?range=24h")
    assert page.locator("#usage-chart a.bar").count() >= 2
    assert page.locator("#usage-chart text.x-label").count() >= 6
    assert page.locator("#usage-chart text.y-value").first.text_content() == "0"
    shots.both_sizes(page, "dashboard-24-hours")
    if page.locator("#top-end-users a", has_text=END_USER).count() == 0:
        page.locator("#show-all-end_user").click()  # one token: maybe not in the top ten
        page.wait_for_url("**/dashboard/?range=24h&all=end_user*")
    assert page.locator("#top-end-users a", has_text=END_USER).count() == 1
    caller_link = page.locator("#top-end-users a", has_text=END_USER).get_attribute("href")
    page.goto(f"{portal_url}/admin/audit/tokengrant/dashboard/?range=24h")

    # The newest bar is the current hour: only the new token is in it.
    page.locator("#usage-chart a.bar").last.click()
    page.wait_for_url(f"{portal_url}/admin/audit/tokengrant/?**")
    assert "hour=" in page.url
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1
    row = rows.first.inner_text()
    assert body["grant_id"][:8] in row and END_USER in row, row
    assert "Globex web" in row
    assert page.locator("#dashboard-selection").inner_text().count("UTC") == 1
    shots.both_sizes(page, "grants-of-the-clicked-hour")

    # A breakdown row leads to exactly that end user's grants.
    page.goto(f"{portal_url}{caller_link}")
    assert page.locator("#result_list tbody tr").count() == 1
    assert END_USER in page.locator("#result_list tbody tr").first.inner_text()
    assert OTHER_ORG not in page.content()

    assert browsers.console.errors == [], "\n".join(browsers.console.errors)
