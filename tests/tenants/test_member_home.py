"""The member's page (issue 20, item 6): the profiles members may use, and their client guides.

What the page offers must be exactly what the API's session path grants a member
(apps/issuance/selectors.py profiles_for_caller), in the member's active organisation only;
a guide for any other profile is the same 404 as a missing one; no client key is ever shown.
"""

import re

import pytest
from django.urls import reverse

from apps.issuance.contract import Caller
from apps.issuance.selectors import profile_locks_for_caller, profiles_for_caller
from apps.policies import services as policy_services
from apps.policies.models import LockMode
from apps.tenants.context import ACTIVE_ORGANIZATION_SESSION_KEY
from apps.tenants.models import Role
from apps.tenants.templatetags.durations import duration
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

MODEL = "gemini-2.0-flash-live-001"
HOSTILE = "</code><script>alert(1)</script>"
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)  # any without src


def make_profile(world, slug, **fields):
    values = {
        "organization": world.organization,
        "actor": world.owner,
        "slug": slug,
        "name": fields.pop("name", slug.replace("-", " ").title()),
        "model": MODEL,
        "config": {"response_modalities": ["AUDIO"]},
        **fields,
    }
    return policy_services.profile_create(**values)


@pytest.fixture
def profiles(two_orgs):
    """Alpha: one open to members, one for apps only, one open but inactive. Bravo: one open."""
    alpha, bravo = two_orgs
    return {
        "open": make_profile(
            alpha,
            "alpha-open",
            name="Alpha open tutor",
            description="Spoken answers for Alpha's staff.",
            members_may_use=True,
            uses=2,
            expire_seconds=3600,
            new_session_seconds=90,
        ),
        "fields": make_profile(
            alpha,
            "alpha-fields",
            config={"response_modalities": ["TEXT"], "temperature": 0.5},
            lock_mode=LockMode.FIELDS_SET,
            members_may_use=True,
        ),
        "apps_only": alpha.profile,  # alpha-voice: members_may_use is off
        "inactive": make_profile(alpha, "alpha-retired", members_may_use=True, is_active=False),
        "bravo": make_profile(bravo, "bravo-open", members_may_use=True),
    }


def cards(html: str) -> list[str]:
    return re.findall(r'<article class="card profile-card" id="profile-([\w-]+)"', html)


def guide_url(slug: str) -> str:
    return reverse("member_profile_guide", args=[slug])


# --- the selector -------------------------------------------------------------------------


def test_a_members_profiles_are_the_active_ones_open_to_members(two_orgs, profiles):
    alpha, _ = two_orgs
    caller = Caller(organization=alpha.organization, member=alpha.users[Role.MEMBER])

    offered = set(profiles_for_caller(caller=caller))

    assert offered == {profiles["open"], profiles["fields"]}


def test_each_profile_comes_with_its_lock(two_orgs, profiles):
    alpha, _ = two_orgs
    caller = Caller(organization=alpha.organization, member=alpha.users[Role.MEMBER])

    by_slug = {p.slug: lock for p, lock in profile_locks_for_caller(caller=caller)}

    assert by_slug["alpha-open"].lock == "whole_setup"
    assert "generationConfig" in by_slug["alpha-open"].locked_fields
    assert by_slug["alpha-fields"].lock == "fields"
    assert by_slug["alpha-fields"].locked_fields == (
        "model",
        "generationConfig.responseModalities",
        "generationConfig.temperature",
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (60, "1 minute"),
        (90, "1 minute 30 seconds"),
        (1800, "30 minutes"),
        (5400, "1 hour 30 minutes"),
        (86_400, "1 day"),
        (3601, "about 1 hour"),  # never "1 hour 1 second": units side by side only
        (7199, "about 1 hour 59 minutes"),
        (90_061, "about 1 day 1 hour"),
        (0, "0 seconds"),
    ],
)
def test_windows_read_as_durations(seconds, text):
    assert duration(seconds) == text


# --- the home page ------------------------------------------------------------------------


def test_a_member_sees_only_the_profiles_members_may_use_in_their_organisation(
    client, two_orgs, profiles
):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.MEMBER])

    response = client.get(reverse("home"))

    assert response.status_code == 200
    html = response.content.decode()
    assert cards(html) == ["alpha-fields", "alpha-open"]  # by name: "Alpha Fields" < "Alpha open"
    for hidden in ("alpha-voice", "alpha-retired", "bravo"):
        assert hidden not in html.lower()
    assert "You are a <strong>member</strong>" in html
    assert 'id="open-admin"' not in html  # a member has no admin


def test_a_profile_the_sdk_no_longer_accepts_is_left_out_not_a_broken_page(
    client, two_orgs, profiles, caplog
):
    alpha, _ = two_orgs
    stale = profiles["fields"]
    type(stale).objects.filter(pk=stale.pk).update(config={"no_such_setting": 1})  # an old row
    client.force_login(alpha.users[Role.MEMBER])

    response = client.get(reverse("home"))

    assert response.status_code == 200
    assert cards(response.content.decode()) == ["alpha-open"]
    assert "profile alpha-fields of alpha left out" in caplog.text


@pytest.mark.parametrize("slug", ["alpha-open", "alpha-fields"])
def test_the_guide_states_a_tokens_lock_and_windows_in_the_cards_words(
    client, two_orgs, profiles, slug
):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.MEMBER])
    home = client.get(reverse("home")).content.decode()
    card = home.split(f'id="profile-{slug}"')[1].split("</article>")[0]
    guide = client.get(guide_url(slug)).content.decode()

    for part in ("profile-lock", "profile-windows"):
        said = re.search(rf'class="{part}">(.*?)</dd>', card, re.DOTALL).group(1)
        assert said.strip() and said in guide, part


def test_each_card_shows_the_profile_its_lock_and_windows_and_how_to_get_a_token(
    client, two_orgs, profiles
):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.MEMBER])

    html = client.get(reverse("home")).content.decode()

    card = html[
        html.index('id="profile-alpha-open"') : html.index(
            "</article>", html.index('id="profile-alpha-open"')
        )
    ]
    assert "Alpha open tutor" in card
    assert "Spoken answers for Alpha&#x27;s staff." in card
    assert f"<code>{MODEL}</code>" in card
    assert "<strong>The whole setup</strong>" in card
    assert "All " in card and "setup fields are locked" in card
    assert (
        "starts 2 sessions, new ones within 1 minute 30 seconds of issue; "
        "expires 1 hour after issue." in card
    )
    assert 'data-profile="alpha-open"' in card and ">Get a token</button>" in card
    assert f'href="{guide_url("alpha-open")}"' in card
    fields = html[html.index('id="profile-alpha-fields"') :]
    assert "<strong>Fields</strong>" in fields
    assert "<li><code>generationConfig.temperature</code></li>" in fields
    # What the script needs, from the page, and the script itself from our own origin.
    assert 'data-tokens-url="/api/v1/tokens"' in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert '<script src="/static/ephemera/member.js" defer></script>' in html
    assert not INLINE_SCRIPT.search(html)  # the CSP runs no inline script


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.ADMIN, Role.OWNER])
def test_other_roles_see_the_same_profiles_and_the_way_to_the_admin(
    client, two_orgs, profiles, role
):
    alpha, _ = two_orgs
    client.force_login(alpha.users[role])

    response = client.get(reverse("home"))

    html = response.content.decode()
    assert response.status_code == 200
    assert cards(html) == ["alpha-fields", "alpha-open"]
    assert f'id="open-admin" href="{reverse("admin:index")}"' in html
    assert f"You are a <strong>{role.label.lower()}</strong>" in html


def test_the_active_organisation_decides_which_profiles_show(client, two_orgs, profiles):
    alpha, bravo = two_orgs
    member = UserFactory(username="both@shared.test")
    MembershipFactory(organization=alpha.organization, user=member, role=Role.MEMBER)
    MembershipFactory(organization=bravo.organization, user=member, role=Role.MEMBER)
    client.force_login(member)
    session = client.session
    session[ACTIVE_ORGANIZATION_SESSION_KEY] = bravo.organization.pk
    session.save()

    html = client.get(reverse("home")).content.decode()

    assert cards(html) == ["bravo-open"]
    assert "alpha" not in html.lower()
    assert client.get(guide_url("alpha-open")).status_code == 404


def test_no_profile_open_to_members_says_who_opens_one(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.MEMBER])

    html = client.get(reverse("home")).content.decode()

    assert cards(html) == []
    assert "No Live profile is open to members of Alpha Org yet." in html
    assert "Members may use" in html


def test_the_operator_and_people_without_an_organisation_keep_their_pages(
    client, two_orgs, operator
):
    client.force_login(operator)
    assert client.get(reverse("home"))["Location"] == reverse("admin:index")
    assert client.get(guide_url("alpha-voice")).status_code == 404

    client.force_login(UserFactory(username="nobody@elsewhere.test"))
    assert client.get(reverse("home"))["Location"] == reverse("no_organization")
    assert client.get(guide_url("alpha-voice"))["Location"] == reverse("no_organization")


@pytest.mark.parametrize("url", [reverse("home"), "/profiles/alpha-open/guide/"])
def test_anonymous_visitors_are_sent_to_sign_in(client, url):
    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('account_login')}?next={url}"


def test_hostile_profile_text_stays_text(client, two_orgs):
    alpha, _ = two_orgs
    make_profile(alpha, "alpha-hostile", name=HOSTILE, description=HOSTILE, members_may_use=True)
    client.force_login(alpha.users[Role.MEMBER])

    for url in (reverse("home"), guide_url("alpha-hostile")):
        html = client.get(url).content.decode()
        assert "<script>alert(1)</script>" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


# --- the client guide ---------------------------------------------------------------------


def test_the_guide_is_the_admins_guide_for_a_profile_members_may_use(client, two_orgs, profiles):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.MEMBER])

    response = client.get(guide_url("alpha-open"))

    assert response.status_code == 200
    html = response.content.decode()
    assert response.context["guide"].profile == profiles["open"]
    assert "Client guide: Alpha open tutor" in html
    assert "http://testserver/api/v1/tokens" in html
    for snippet in response.context["guide"].snippets:
        assert f'id="snippet-{snippet.key}"' in html
        assert f'data-copy-target="snippet-{snippet.key}"' in html
    assert "Bearer $EPHEMERA_CLIENT_KEY" in html
    assert "your organisation's admins allowed to use this profile" in html
    assert "/admin/" not in html  # no admin links for a member
    assert "Alpha web" not in html  # nor which app holds a key
    assert not INLINE_SCRIPT.search(html)


@pytest.mark.parametrize("slug", ["bravo-open", "alpha-voice", "alpha-retired"])
def test_any_other_profiles_guide_is_the_same_404(client, two_orgs, profiles, slug):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.MEMBER])
    missing = client.get(guide_url("no-such-profile"))

    response = client.get(guide_url(slug))

    assert response.status_code == 404
    assert response.content == missing.content
    assert "bravo" not in response.content.decode().lower()


@pytest.mark.parametrize("role", list(Role))
def test_no_client_key_appears_on_either_page(client, two_orgs, profiles, role):
    alpha, bravo = two_orgs
    client.force_login(alpha.users[role])

    for url in (reverse("home"), guide_url("alpha-open")):
        html = client.get(url).content.decode()
        for world in (alpha, bravo):
            assert world.raw_client_key not in html
            assert world.client_key.prefix not in html
        assert "eph_" not in html


def test_the_admins_guide_page_renders_through_the_same_include(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.ADMIN])

    response = client.get(
        reverse("admin:policies_liveconstraintprofile_guide", args=[alpha.profile.pk])
    )

    assert "policies/_profile_guide.html" in [t.name for t in response.templates]
    html = response.content.decode()
    assert 'class="module guide-flow"' in html
    assert "Alpha web" in html  # the admin still names the app whose key to use
