"""Browser journey (issue 19, item 6): usage for finance, from a page and from a script.

An owner signs in with Google, makes a key on the finance app's page that may only *read
usage*, and a script reads ``GET /api/v1/usage`` with it as CSV; the same key asking for a
token is refused. The owner then opens Audit → Token grants → *Usage export*, picks the
range and downloads the same CSV. A second organisation's usage never shows. Screenshots at
1440×900 and 390×844 in var/artifacts/usage-export/; at 390 px no page scrolls sideways.
"""

import re
from datetime import UTC, timedelta

import pytest
import requests
from django.utils import timezone

from apps.audit.models import TokenGrant
from apps.clients import services as client_services
from apps.policies import services as policy_services
from apps.tenants.models import Role
from tests.conftest import well_inside_window
from tests.factories import DomainFactory, InvitationFactory, OrganizationFactory
from tests.journeys.support import ARTIFACTS, DESKTOP, Screenshots, orm

pytestmark = pytest.mark.django_db(transaction=True)

ORG, SLUG, DOMAIN = "Umbrella", "umbrella", "umbrella.test"
OWNER = "olga@umbrella.test"
APP, FINANCE_APP = "Umbrella web", "Umbrella finance"
HEADER = "day,app,profile,issued,denied,failed"


@pytest.fixture
def usage_screenshots() -> Screenshots:
    return Screenshots(ARTIFACTS.parent / "usage-export")


def an_organisation_with_a_week_of_grants() -> None:
    organization = OrganizationFactory(name=ORG, slug=SLUG)
    DomainFactory(organization=organization, name=DOMAIN)
    InvitationFactory(organization=organization, email=OWNER, role=Role.OWNER)
    profile = policy_services.profile_create(
        organization=organization,
        actor=None,
        slug="umbrella-voice",
        name="Umbrella voice",
        model="gemini-2.0-flash-live-001",
        config={"response_modalities": ["AUDIO"]},
    )
    app = client_services.client_app_create(
        organization=organization, actor=None, name=APP, allowed_profiles=[profile]
    )
    client_services.client_app_create(organization=organization, actor=None, name=FINANCE_APP)
    other = OrganizationFactory(name="Hooli Org", slug="hooli")
    other_app = client_services.client_app_create(organization=other, actor=None, name="Hooli app")
    now = timezone.now()
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    latest = max(now - timedelta(minutes=5), midnight)  # still today, just after midnight too
    grants = []
    for day in range(7):
        for outcome in ["issued", "issued", "denied_quota", "upstream_error"][: 1 + day % 4]:
            moment = latest - timedelta(days=day)
            grants.append(
                TokenGrant(
                    organization=organization,
                    client_app=app,
                    profile=profile,
                    profile_slug=profile.slug,
                    outcome=outcome,
                    requested_at=moment,
                )
            )
            grants.append(
                TokenGrant(
                    organization=other, client_app=other_app, outcome=outcome, requested_at=moment
                )
            )
    TokenGrant.objects.bulk_create(grants)


def test_a_read_key_and_the_usage_page_give_finance_the_same_csv(
    browsers, portal_url, google_in_browser, usage_screenshots, tmp_path
):
    well_inside_window(86400, room=180)  # "today" stays today from the grants to the download
    orm(an_organisation_with_a_week_of_grants)
    shots = usage_screenshots
    page = browsers.open("owner")
    page.set_viewport_size(DESKTOP)
    google_in_browser.sign_in(
        page, portal_url, sub="olga", email=OWNER, email_verified=True, hd=DOMAIN
    )

    # A read-usage key on the finance app's page.
    page.goto(f"{portal_url}/admin/clients/clientapp/?q=finance")
    page.locator("#result_list a", has_text=FINANCE_APP).click()
    page.wait_for_url(re.compile(r"/admin/clients/clientapp/\d+/change/"))
    app_url = page.url.split("?")[0]
    page.fill("#new-key-label", "monthly report")
    page.select_option("#new-key-scope", "read_usage")
    shots.both_sizes(page, "finance-app-read-key-chosen")
    page.locator("#create-key").click()
    page.wait_for_url(f"{portal_url}/admin/clients/clientapp/*/keys/*/created/")
    new_key = page.locator("#new-key")
    raw_key = new_key.inner_text().strip()
    assert "GET /api/v1/usage" in page.locator(".key-once").inner_text()
    shots.both_sizes(page, "read-key-shown-once", mask=[new_key])
    page.goto(app_url)
    assert page.locator("table.keys td.key-scope").inner_text() == "read usage"

    # The script: usage as CSV, and no token.
    today = timezone.now().astimezone(UTC).date()
    first = today - timedelta(days=29)
    auth = {"Authorization": f"Bearer {raw_key}"}
    api_csv = requests.get(
        f"{portal_url}/api/v1/usage",
        params={"from": first.isoformat(), "to": today.isoformat(), "format": "csv"},
        headers=auth,
        timeout=20,
    )
    token = requests.post(
        f"{portal_url}/api/v1/tokens",
        json={"profile": "umbrella-voice", "end_user": "finance"},
        headers=auth,
        timeout=20,
    )
    assert api_csv.status_code == 200, api_csv.text
    lines = api_csv.text.splitlines()
    assert lines[0] == HEADER
    assert len(lines) == 1 + 7  # one line a day: one app, one profile
    assert "Hooli" not in api_csv.text
    assert token.status_code == 403 and token.json()["error"]["code"] == "forbidden"

    # The page: next to the dashboard, a range (the last 30 days by default), a download.
    page.goto(f"{portal_url}/admin/audit/tokengrant/")
    page.locator("#usage-export-link").click()
    page.wait_for_url(f"{portal_url}/admin/audit/tokengrant/usage/")
    assert page.locator("#id_first").input_value() == first.isoformat()
    assert page.locator("#id_last").input_value() == today.isoformat()
    shots.both_sizes(page, "usage-export-page")
    with page.expect_download() as download_info:
        page.locator("#usage-download").click()
    download = download_info.value
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    assert download.suggested_filename == f"usage-{SLUG}-{first}-{today}.csv"
    # The token refused above is a denied grant of today (no profile was resolved for it):
    # the page counts it too, at once.
    refused_row = f"{today.isoformat()},{FINANCE_APP},,0,1,0"
    assert saved.read_text().splitlines() == [*lines[:-1], refused_row, lines[-1]]

    # A backwards range is refused on the page, with the form kept.
    page.fill("#id_first", today.isoformat())
    page.fill("#id_last", (today - timedelta(days=1)).isoformat())
    page.locator("#usage-download").click()
    page.wait_for_load_state()
    assert "before the first" in page.locator(".errorlist").inner_text()
    shots.both_sizes(page, "usage-export-backwards-range")

    assert browsers.console.errors == [], "\n".join(browsers.console.errors)
