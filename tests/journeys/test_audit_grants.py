"""Browser journey (issue 19, items 2 and 3): the auditor's grants list, for people.

A client backend gets two tokens through the API with its key; an auditor (in by invitation)
opens the grants list, narrows it to issued grants, searches an end user typed in another
case, removes a filter chip, pastes a bare token (no ``auth_tokens/``) into the look-up and
lands on its grant, then downloads the CSV export of the search. Screenshots at 1440×900 and
390×844 in var/artifacts/audit-grants/; at 390 px no page scrolls sideways.
"""

import csv
import io
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from apps.clients import services as client_services
from apps.policies import services as policy_services
from apps.tenants.models import Role
from tests.factories import DomainFactory, InvitationFactory, OrganizationFactory
from tests.journeys.support import ARTIFACTS, DESKTOP, Screenshots, orm

pytestmark = pytest.mark.django_db(transaction=True)

ORG, SLUG, DOMAIN = "Acme Audio", "acme", "acme.test"
AUDITOR = "ines@acme.test"
PROFILE = "acme-voice"
END_USER = "Alice.Liddell@Acme.example"  # searched for as "alice.liddell"
OTHER_USER = "bob@acme.example"


@pytest.fixture
def grant_screenshots() -> Screenshots:
    """A folder of this journey's own: another journey's run empties only its own."""
    return Screenshots(ARTIFACTS.parent / "audit-grants")


def an_organisation_with_a_client_key() -> str:
    """The organisation, its auditor's invitation, a profile, an app and its key (returned)."""
    organization = OrganizationFactory(name=ORG, slug=SLUG)
    DomainFactory(organization=organization, name=DOMAIN)
    InvitationFactory(organization=organization, email=AUDITOR, role=Role.AUDITOR)
    profile = policy_services.profile_create(
        organization=organization,
        actor=None,
        slug=PROFILE,
        name="Acme voice",
        model="gemini-2.0-flash-live-001",
        config={"response_modalities": ["AUDIO"]},
    )
    app = client_services.client_app_create(
        organization=organization,
        actor=None,
        name="Acme web",
        allowed_profiles=[profile],
        allowed_origins=["https://acme.test"],
    )
    _, raw_key = client_services.client_key_create(
        organization=organization, client_app=app, actor=None, label="web backend"
    )
    return raw_key


def get_token(portal_url: str, raw_key: str, end_user: str) -> dict:
    response = httpx.post(
        f"{portal_url}/api/v1/tokens",
        json={"profile": PROFILE, "end_user": end_user},
        headers={"Authorization": f"Bearer {raw_key}"},
        timeout=20,
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_an_auditor_searches_filters_looks_up_and_exports_grants(
    browsers, portal_url, google_in_browser, grant_screenshots
):
    shots = grant_screenshots
    raw_key = orm(an_organisation_with_a_client_key)
    issued = get_token(portal_url, raw_key, END_USER)
    get_token(portal_url, raw_key, OTHER_USER)
    token, grant_id = issued["token"], issued["grant_id"]
    assert token.startswith("auth_tokens/")

    page = browsers.open("auditor")
    google_in_browser.sign_in(page, portal_url, sub="ines", email=AUDITOR, email_verified=True)
    grants_url = f"{portal_url}/admin/audit/tokengrant/"

    # Both grants, every column on one line at 1440 px; times in the browser's zone.
    page.locator("#nav-grants").click()
    page.wait_for_url(grants_url)
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 2
    headers = page.locator("#result_list thead th").all_inner_texts()
    assert [h.strip().lower() for h in headers] == [
        "time", "outcome", "app", "key", "profile", "end user", "expires", "error", "grant id",
    ]  # fmt: skip
    row = page.locator("#result_list tbody tr", has_text=END_USER)
    when = row.locator("td.field-when time, th.field-when time")
    assert when.get_attribute("data-localised")  # local-time.js ran under the CSP
    assert when.get_attribute("title").endswith(" UTC")
    assert len(when.inner_text().split(":")) == 3  # hours, minutes and seconds
    assert row.locator(".field-short_id code").inner_text() == grant_id[:8]
    assert row.locator(".field-short_id code").get_attribute("title") == grant_id
    assert "Issued" in row.locator(".field-outcome_label").inner_text()
    assert row.locator(".field-profile_label").inner_text() == f"{PROFILE}@1"
    assert "Times in your time zone" in page.locator("#grants-zone").inner_text()
    page.set_viewport_size(DESKTOP)
    hidden = page.evaluate(
        "(() => { const box = document.querySelector('#changelist .results');"
        " return box.scrollWidth - box.clientWidth; })()"
    )
    assert hidden <= 0, f"{hidden}px of the list are scrolled out of view at 1440 px"
    shots.both_sizes(page, "grants-list")

    # Issued grants only (a filter), then an end user typed in another case.
    page.goto(f"{grants_url}?outcome__exact=issued")
    page.fill("#searchbar", "alice.liddell")
    page.locator("#searchbar").press("Enter")
    page.wait_for_url("**/admin/audit/tokengrant/?*q=alice.liddell*")
    assert page.locator("#result_list tbody tr").count() == 1
    assert grant_id[:8] in page.locator("#result_list tbody tr").first.inner_text()
    chips = page.locator("#filter-chips .filter-chip-label").all_inner_texts()
    assert sorted(chips) == ["Outcome: Issued", "Search: alice.liddell"]
    shots.both_sizes(page, "grants-searched-and-filtered")

    # One click on the outcome chip: the filter goes, the search stays.
    page.locator("#filter-chips a.filter-chip", has_text="Outcome").click()
    page.wait_for_load_state()
    query = parse_qs(urlparse(page.url).query)
    assert query == {"q": ["alice.liddell"]}, page.url
    assert page.locator("#filter-chips a.filter-chip").count() == 1
    assert page.locator("#result_list tbody tr").count() == 1
    search_url = page.url
    shots.both_sizes(page, "grants-chip-removed")

    # The CSV export of this search holds the grant (and never the token).
    with page.expect_download() as download:
        page.locator("#export-csv").click()
    exported = download.value.path().read_text()
    records = list(csv.DictReader(io.StringIO(exported)))
    assert [(r["public_id"], r["end_user"]) for r in records] == [(grant_id, END_USER)]
    assert token.removeprefix("auth_tokens/") not in exported

    # A bare token, as client code keeps it, pasted with a stray newline.
    page.goto(search_url)
    page.get_by_role("link", name="Look up a token").click()
    box = page.locator("#token-lookup textarea[name=token]")
    box.fill("mistyped-token")
    page.get_by_role("button", name="Find the grant").click()
    page.wait_for_load_state()
    assert "No grant of Acme Audio matches that token." in page.locator(".messagelist").inner_text()
    assert box.input_value() == "mistyped-token"  # kept, to correct
    assert "token=" not in page.url
    shots.both_sizes(page, "lookup-no-match-keeps-input")
    box.fill(token.removeprefix("auth_tokens/") + "\n")
    shots.both_sizes(page, "lookup-bare-token-pasted", mask=[box])
    page.get_by_role("button", name="Find the grant").click()
    page.wait_for_url(f"{portal_url}/admin/audit/tokengrant/*/change/")
    assert page.locator(".field-public_id .readonly").inner_text() == grant_id  # the full id
    assert page.locator(".field-end_user .readonly").inner_text() == END_USER
    assert token.removeprefix("auth_tokens/") not in page.content()
    assert token.removeprefix("auth_tokens/") not in page.url
    shots.both_sizes(page, "lookup-opened-grant")

    assert browsers.console.errors == [], "\n".join(browsers.console.errors)
