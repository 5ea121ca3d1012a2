"""Browser journey (issue 18, items 4 and 5): an admin sets up issuance from the forms alone.

An admin builds a Live profile with the form fields only and watches the wire preview change
before saving; makes a client app with a quota and a named key, sees the key once, reloads
that page (no second key: counted in the database and on the page); a backend gets a token
with `curl`; and the app's page then says when the key was last used, how many tokens it gave
today and how much of the quota's window is used. Screenshots at 1440×900 and 390×844 in
var/artifacts/journeys-keys/; at 390 px no page scrolls sideways.
"""

import json
import subprocess
import time
from datetime import datetime

import pytest

from apps.clients.models import ClientKey
from apps.tenants.models import Role
from tests.conftest import well_inside_window
from tests.factories import DomainFactory, InvitationFactory, OrganizationFactory
from tests.journeys.steps import TUTOR_NAME, TUTOR_SLUG, build_profile_with_fields
from tests.journeys.support import ARTIFACTS, DESKTOP, Screenshots, orm

pytestmark = pytest.mark.django_db(transaction=True)

ORG, SLUG, DOMAIN = "Initech", "initech", "initech.test"
ADMIN = "ada@initech.test"
APP, LABEL = "Initech payments", "payments backend"
QUOTA_LIMIT = 50


@pytest.fixture
def key_screenshots() -> Screenshots:
    """A folder of this journey's own: another journey's run empties only its own."""
    return Screenshots(ARTIFACTS.parent / "journeys-keys")


def an_organisation_with_an_admin_invited() -> None:
    organization = OrganizationFactory(name=ORG, slug=SLUG)
    DomainFactory(organization=organization, name=DOMAIN)
    InvitationFactory(organization=organization, email=ADMIN, role=Role.ADMIN)


def test_a_profile_from_fields_a_named_key_shown_once_then_its_use_on_the_app_page(
    browsers, portal_url, google_in_browser, key_screenshots
):
    orm(an_organisation_with_an_admin_invited)
    shots = key_screenshots
    page = browsers.open("admin")
    page.set_viewport_size(DESKTOP)
    google_in_browser.sign_in(
        page, portal_url, sub="ada", email=ADMIN, email_verified=True, hd=DOMAIN
    )
    build_profile_with_fields(page, portal_url, shots)

    # An app allowed the profile; then a quota of 50 an hour on it.
    page.goto(f"{portal_url}/admin/clients/clientapp/add/")
    page.fill("#id_name", APP)
    page.select_option("#id_allowed_profiles_from", label=f"{TUTOR_NAME} ({TUTOR_SLUG})")
    page.locator("#id_allowed_profiles_add").click()
    page.get_by_role("button", name="Save and continue editing").click()
    page.wait_for_url(f"{portal_url}/admin/clients/clientapp/*/change/")
    app_url = page.url
    page.locator("#quotas-group .add-row a").click()
    page.select_option("#id_quotas-0-scope", "client_app")
    page.select_option("#id_quotas-0-window", "hour")
    page.fill("#id_quotas-0-limit", str(QUOTA_LIMIT))
    page.get_by_role("button", name="Save and continue editing").click()
    page.wait_for_url(app_url)
    assert page.locator("#quotas-0 td.field-usage").inner_text().strip() == (
        f"0 of {QUOTA_LIMIT} this hour"
    )

    # A named key: POST, then the redirect's page shows it once.
    page.fill("#new-key-label", LABEL)
    page.locator("#create-key").click()
    page.wait_for_url(f"{portal_url}/admin/clients/clientapp/*/keys/*/created/")
    created_url = page.url
    new_key = page.locator("#new-key")
    raw_key = new_key.inner_text().strip()
    assert raw_key.startswith("eph_") and raw_key not in created_url
    assert LABEL in page.locator(".key-name").inner_text()
    shots.both_sizes(page, "key-shown-once", mask=[new_key])  # the pictures never show it

    page.reload()
    assert page.locator("#new-key").count() == 0
    assert "already been shown" in page.locator("#key-already-shown").inner_text()
    shots.both_sizes(page, "key-page-reloaded")
    assert orm(lambda: ClientKey.objects.filter(client_app__name=APP).count()) == 1

    page.goto(app_url)
    key_rows = page.locator("table.keys tbody tr")
    assert key_rows.count() == 1  # the reload made no key
    assert key_rows.first.locator("td.key-label").inner_text() == LABEL
    assert key_rows.first.locator("td.key-last-used").inner_text() == "never"

    # The backend asks for a token with curl, then the app's page shows the use.
    well_inside_window(3600, room=60)  # its quota counts per clock hour: the token, the page
    status, body = curl_token(portal_url, raw_key)
    assert status == 201, body
    used_at = wait_for_last_use(raw_key)

    page.goto(app_url)
    row = page.locator("table.keys tbody tr").first
    assert row.locator("td.key-last-used").inner_text() == used_at.strftime("%Y-%m-%d %H:%M")
    assert row.locator("td.key-today").inner_text() == "1"
    assert row.locator("td.key-week").inner_text() == "1"
    assert "1 today, 1 in the last 7 days" in page.locator(".field-issued").inner_text()
    assert page.locator("#quotas-0 td.field-usage").inner_text().strip() == (
        f"1 of {QUOTA_LIMIT} this hour"
    )
    shots.both_sizes(page, "app-page-after-a-token")

    page.goto(f"{portal_url}/admin/clients/clientapp/")
    listed = page.locator("#result_list tbody tr", has_text=APP)
    assert listed.locator("td.field-issued_today").inner_text() == "1"
    shots.both_sizes(page, "app-list-with-use")

    assert browsers.console.errors == [], "\n".join(browsers.console.errors)


def curl_token(portal_url: str, raw_key: str) -> tuple[int, dict]:
    """`curl`, the real binary, as the README shows it; the key on stdin, not the argv."""
    headers = {"Authorization": f"Bearer {raw_key}", "Content-Type": "application/json"}
    config = "".join(f'header = "{name}: {value}"\n' for name, value in headers.items())
    result = subprocess.run(  # noqa: S603 (curl, fixed arguments)
        [
            "/usr/bin/curl",
            "-sS",
            "--max-time",
            "20",
            "-K",
            "-",
            "-d",
            json.dumps({"profile": TUTOR_SLUG, "end_user": "journey-user"}),
            "-w",
            "\n%{http_code}",
            f"{portal_url}/api/v1/tokens",
        ],
        input=config,
        capture_output=True,
        text=True,
        check=True,
    )
    text, _, code = result.stdout.rpartition("\n")
    return int(code), json.loads(text)


def wait_for_last_use(raw_key: str) -> datetime:
    """The stamp is written after the answer, not before it: give it a moment."""
    prefix = raw_key.split("_")[1]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        used = orm(
            lambda: ClientKey.objects.values_list("last_used_at", flat=True).get(prefix=prefix)
        )
        if used is not None:
            return used
        time.sleep(0.05)
    raise AssertionError("the key's last use was never written")
