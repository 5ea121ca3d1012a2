"""The admin's home as an organisation's admins see it: the onboarding checklist and the
sandbox banner (apps/tenants/admin_site.py, templates/admin/index.html)."""

from html.parser import HTMLParser

import pytest
from django.urls import reverse

from apps.clients.models import ClientKey
from apps.tenants.context import ACTIVE_ORGANIZATION_SESSION_KEY
from apps.tenants.models import Domain, Role
from tests.factories import MembershipFactory, OrganizationFactory, TokenGrantFactory

pytestmark = pytest.mark.django_db

SANDBOX_WORDS = "Tokens are minted by the local sandbox, not Google"


class ChecklistParser(HTMLParser):
    """The checklist as the page shows it: per step, its state, its link and its 'for whom'."""

    def __init__(self):
        super().__init__()
        self.steps: dict[str, dict] = {}
        self.current: dict | None = None
        self.capture: str | None = None
        self.collapsed: bool | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if attrs.get("id") == "onboarding":
            self.collapsed = tag == "details"
        if tag == "li" and "data-step" in attrs:
            self.current = {"state": attrs["data-state"], "href": None, "link": "", "who": ""}
            self.steps[attrs["data-step"]] = self.current
        elif self.current is not None and tag == "a" and "step-action" in classes:
            self.current["href"] = attrs["href"]
            self.capture = "link"
        elif self.current is not None and "step-who" in classes:
            self.capture = "who"

    def handle_endtag(self, tag):
        if tag in ("a", "span"):
            self.capture = None
        if tag == "li":
            self.current = None

    def handle_data(self, data):
        if self.current is not None and self.capture:
            self.current[self.capture] += data.strip()


def checklist(response) -> ChecklistParser:
    assert response.status_code == 200
    parser = ChecklistParser()
    parser.feed(response.content.decode())
    return parser


@pytest.fixture
def on_google(settings):
    """A real upstream configured: no sandbox, no platform key."""
    settings.GEMINI_BASE_URL = ""
    settings.GEMINI_API_KEY = ""


@pytest.fixture
def fresh(db):
    """A new organisation with nothing set up but its owner and an admin."""
    organization = OrganizationFactory(name="Fresh Org", slug="fresh")
    users = {
        role: MembershipFactory(organization=organization, role=role).user
        for role in (Role.OWNER, Role.ADMIN)
    }
    return organization, users


def test_a_fresh_organisations_owner_sees_every_step_to_do_with_the_pages_that_do_them(
    client, fresh, on_google
):
    _, users = fresh
    client.force_login(users[Role.OWNER])

    page = checklist(client.get(reverse("admin:index")))

    assert page.collapsed is False
    assert list(page.steps) == [
        "domain",
        "gemini",
        "profile",
        "client_app",
        "first_token",
        "auditor",
    ]
    assert {key: step["state"] for key, step in page.steps.items()} == dict.fromkeys(
        page.steps, "todo"
    )
    links = {key: (step["link"], step["href"]) for key, step in page.steps.items()}
    assert links["gemini"] == ("Add the key", reverse("admin:tenants_geminicredential_add"))
    assert links["profile"] == (
        "Create a profile",
        reverse("admin:policies_liveconstraintprofile_add"),
    )
    assert links["client_app"] == ("Register an app", reverse("admin:clients_clientapp_add"))
    assert links["auditor"] == ("Invite an auditor", reverse("admin:tenants_invitation_add"))
    # Only the operator claims domains; nothing to ask a token for before there is a profile.
    assert links["domain"] == ("", None)
    assert page.steps["domain"]["who"] == "For the operator"
    assert links["first_token"] == ("", None)
    assert page.steps["first_token"]["who"] == ""


def test_an_admin_gets_links_only_where_an_admin_may_act(client, fresh, on_google):
    _, users = fresh
    client.force_login(users[Role.ADMIN])

    steps = checklist(client.get(reverse("admin:index"))).steps

    assert steps["profile"]["href"] == reverse("admin:policies_liveconstraintprofile_add")
    assert steps["client_app"]["href"] == reverse("admin:clients_clientapp_add")
    assert (steps["gemini"]["href"], steps["gemini"]["who"]) == (None, "For an owner")
    assert (steps["auditor"]["href"], steps["auditor"]["who"]) == (None, "For an owner")


def test_auditors_get_no_checklist(client, fresh):
    organization, _ = fresh
    auditor = MembershipFactory(organization=organization, role=Role.AUDITOR).user
    client.force_login(auditor)

    response = client.get(reverse("admin:index"))

    assert checklist(response).collapsed is None
    assert "Set up Fresh Org" not in response.content.decode()


def test_the_operator_sees_the_active_organisations_checklist_and_may_claim_its_domain(
    client, fresh, operator, on_google
):
    organization, _ = fresh
    client.force_login(operator)

    across_all = checklist(client.get(reverse("admin:index")))
    client.post(reverse("admin:switch_organization"), {"organization": organization.pk})
    inside = checklist(client.get(reverse("admin:index")))

    assert across_all.collapsed is None  # no organisation active: nothing to set up
    assert inside.steps["domain"]["href"] == reverse("admin:tenants_domain_add")


def test_steps_link_to_the_row_they_are_about(client, two_orgs, on_google):
    alpha, bravo = two_orgs
    ClientKey.objects.filter(organization=alpha.organization).delete()
    client.force_login(alpha.owner)

    steps = checklist(client.get(reverse("admin:index"))).steps

    assert steps["client_app"]["link"] == "Create a key"
    assert steps["client_app"]["href"] == reverse(
        "admin:clients_clientapp_change", args=[alpha.client_app.pk]
    )
    assert steps["first_token"]["href"] == reverse(
        "admin:policies_liveconstraintprofile_guide", args=[alpha.profile.pk]
    )
    assert str(bravo.profile.pk) not in steps["first_token"]["href"]


def test_a_claimed_domain_links_its_page_with_the_txt_record(client, two_orgs, on_google):
    alpha, _ = two_orgs
    Domain.objects.filter(pk=alpha.domain.pk).update(is_verified=False)
    client.force_login(alpha.users[Role.ADMIN])

    domain = checklist(client.get(reverse("admin:index"))).steps["domain"]

    assert domain["state"] == "waiting"
    assert (domain["link"], domain["href"]) == (
        "See the TXT record",
        reverse("admin:tenants_domain_change", args=[alpha.domain.pk]),
    )


def test_a_set_up_organisation_gets_one_short_line(client, two_orgs, on_google):
    alpha, _ = two_orgs
    TokenGrantFactory(organization=alpha.organization)
    client.force_login(alpha.owner)

    response = client.get(reverse("admin:index"))
    page = checklist(response)

    assert page.collapsed is True
    assert "Alpha Org is set up." in response.content.decode()
    assert all(step["state"] == "done" and step["href"] is None for step in page.steps.values())


def test_the_sandbox_banner_shows_on_every_admin_page_and_the_member_home(
    client, two_orgs, settings
):
    alpha, _ = two_orgs
    settings.GEMINI_BASE_URL = "http://127.0.0.1:8765"
    pages = [reverse("admin:index"), reverse("admin:policies_liveconstraintprofile_changelist")]

    client.force_login(alpha.owner)
    admin_pages = [client.get(url).content.decode() for url in pages]
    client.force_login(alpha.users[Role.MEMBER])
    member_home = client.get(reverse("home")).content.decode()

    for html in [*admin_pages, member_home]:
        assert SANDBOX_WORDS in html
        assert "ephemera/banner.css" in html


def test_no_sandbox_banner_with_a_real_upstream(client, two_orgs, on_google):
    alpha, _ = two_orgs

    client.force_login(alpha.owner)
    admin_index = client.get(reverse("admin:index")).content.decode()
    client.force_login(alpha.users[Role.MEMBER])
    member_home = client.get(reverse("home")).content.decode()

    assert SANDBOX_WORDS not in admin_index
    assert SANDBOX_WORDS not in member_home
    assert "ephemera/banner.css" not in admin_index + member_home


def test_the_sign_in_page_tells_visitors_nothing_about_the_upstream(client, settings):
    settings.GEMINI_BASE_URL = "http://127.0.0.1:8765"

    sign_in = client.get(reverse("account_login")).content.decode()

    assert SANDBOX_WORDS not in sign_in


def test_the_checklist_is_the_active_organisations_only(client, two_orgs, on_google):
    alpha, bravo = two_orgs
    MembershipFactory(organization=bravo.organization, user=alpha.owner, role=Role.OWNER)
    TokenGrantFactory(organization=bravo.organization)  # Bravo is fully set up
    client.force_login(alpha.owner)
    session = client.session
    session[ACTIVE_ORGANIZATION_SESSION_KEY] = alpha.organization.pk
    session.save()

    as_alpha = client.get(reverse("admin:index"))
    client.post(reverse("admin:switch_organization"), {"organization": bravo.organization.pk})
    as_bravo = client.get(reverse("admin:index"))

    assert checklist(as_alpha).steps["first_token"]["state"] == "todo"
    assert "Set up Alpha Org" in as_alpha.content.decode()
    assert checklist(as_bravo).collapsed is True
    assert "Bravo Org is set up." in as_bravo.content.decode()
