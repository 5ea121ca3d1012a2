"""Browser journey (issue 18): a domain verified by DNS, the operator deciding.

The operator has claimed initech.test for Initech. Its owner signs in (by invitation: the
claim is not verified, so the domain lets nobody in yet), finds the TXT record to publish on
the domain's page, copies it with the button, "publishes" it (to a DNS server started in the
test, where the portal's resolver points) and presses "Check DNS now". The operator sees the
record found and verifies with one click; then a colleague on the domain gets in by Google
sign-in alone. Each view is photographed at 1440×900 and 390×844; none scrolls sideways.
"""

import pytest
from playwright.sync_api import expect

from apps.tenants import services as tenant_services
from apps.tenants.models import Domain, Membership, Role, User
from tests.dns_server import LocalDnsServer
from tests.journeys.support import ARTIFACTS, Screenshots, orm

pytestmark = pytest.mark.django_db(transaction=True)

ORG, SLUG, DOMAIN = "Initech", "initech", "initech.test"
OWNER, COLLEAGUE = f"peter@{DOMAIN}", f"milton@{DOMAIN}"
OPERATOR_PASSWORD = "journey-operator-password"


@pytest.fixture
def dns_server(settings):
    with LocalDnsServer() as server:
        settings.DNS_RESOLVER_NAMESERVERS = [f"127.0.0.1:{server.port}"]
        yield server


@pytest.fixture
def shots() -> Screenshots:
    """A folder of its own, so other journeys' runs do not wipe these pictures."""
    return Screenshots(ARTIFACTS.parent / "journeys-domain-dns")


def test_owner_publishes_and_checks_the_operator_verifies(
    browsers, portal_url, google_in_browser, shots, dns_server
):
    claim = orm(claimed_domain_and_invited_owner)
    name = f"_ephemera-challenge.{DOMAIN}"
    value = f"ephemera-verification={claim.verification_token}"

    owner = browsers.open("owner")
    google_in_browser.sign_in(
        owner, portal_url, sub="peter", email=OWNER, email_verified=True, hd=DOMAIN
    )
    owner.goto(f"{portal_url}/admin/tenants/domain/")
    row = owner.locator("#result_list tbody tr", has_text=DOMAIN)
    assert row.locator("td.field-is_verified img").get_attribute("alt") == "False"
    assert row.locator("td.field-dns_check").inner_text() == "never checked"
    assert name in row.inner_text() and value in row.inner_text()
    shots.both_sizes(owner, "owner-domain-list")

    owner.get_by_role("link", name=DOMAIN).click()
    assert owner.locator("#dns-record-name").inner_text() == name
    owner.locator("[data-copy-target=dns-record-value]").click()
    expect(owner.locator("[data-copy-target=dns-record-value]")).to_have_text("Copied")
    assert owner.evaluate("navigator.clipboard.readText()") == value
    shots.both_sizes(owner, "owner-domain-record-to-publish")

    owner.get_by_role("button", name="Check DNS now").click()
    expect_message(owner, f"DNS check of {DOMAIN}: no TXT record at {name}.")
    dns_server.txt(name, "v=spf1 -all", value)  # the owner publishes it beside another
    owner.get_by_role("button", name="Check DNS now").click()
    expect_message(owner, f"DNS check of {DOMAIN}: found the TXT record at {name}.")
    assert "); awaiting the operator" in owner.locator("#dns-check-result").inner_text()
    assert owner.get_by_role("button", name="Verify this domain").count() == 0
    shots.both_sizes(owner, "owner-checked-dns")

    operator = browsers.open("operator")
    operator_signs_in(operator, portal_url)
    operator.goto(f"{portal_url}/admin/tenants/domain/?dns=found&is_verified__exact=0")
    waiting = operator.locator("#result_list tbody tr", has_text=DOMAIN)
    assert "awaiting the operator" in waiting.locator("td.field-dns_check").inner_text()
    shots.both_sizes(operator, "operator-sees-txt-verified")
    waiting.get_by_role("link", name=DOMAIN).click()
    operator.get_by_role("button", name="Verify this domain").click()
    expect_message(operator, "Verified 1 domain(s).")
    shots.both_sizes(operator, "operator-verified")

    colleague = browsers.open("colleague")
    google_in_browser.sign_in(
        colleague,
        portal_url,
        sub="milton",
        email=COLLEAGUE,
        email_verified=True,
        hd=DOMAIN,
        next_path="/",
    )

    verified = orm(Domain.objects.select_related("verified_by").get, pk=claim.pk)
    assert (verified.is_verified, verified.verified_by.username) == (True, "operator")
    joined = orm(
        lambda: Membership.objects.get(user__email=COLLEAGUE, organization__slug=SLUG).role
    )
    assert joined == Role.MEMBER
    assert browsers.console.errors == [], "\n".join(browsers.console.errors)


def claimed_domain_and_invited_owner() -> Domain:
    User.objects.create_superuser("operator", "ops@ephemera.test", OPERATOR_PASSWORD)
    organization = tenant_services.organization_create(name=ORG, slug=SLUG)
    tenant_services.invitation_create(
        organization=organization, email=OWNER, role=Role.OWNER, invited_by=None
    )
    return tenant_services.domain_create(organization=organization, name=DOMAIN)


def operator_signs_in(page, portal_url: str) -> None:
    page.goto(f"{portal_url}/admin/")
    page.get_by_text("Platform operator sign-in").click()
    page.fill("#id_login", "operator")
    page.fill("#id_password", OPERATOR_PASSWORD)
    page.get_by_role("button", name="Sign in with password").click()
    page.wait_for_url(f"{portal_url}/admin/")


def expect_message(page, text: str) -> None:
    expect(page.locator("ul.messagelist")).to_contain_text(text)
