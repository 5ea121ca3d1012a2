"""allauth's pages as Ephemera serves them: no local-account pages, and password sign-in that
refuses clearly while the cache holding its rate limits is out of reach."""

import re
import socket
import time

import pytest
from allauth.account.forms import default_token_generator
from allauth.account.models import EmailAddress
from allauth.account.utils import user_pk_to_url_str
from django.core import mail
from django.test import Client

from apps.tenants.models import Role, User
from tests.conftest import caches_as_deployed
from tests.factories import DomainFactory, OrganizationFactory, UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"  # the factories' password
NEW_PASSWORD = "a brand new passphrase 77"


@pytest.fixture
def client():
    """Django's test client, answering with the response a browser would get, 500s included."""
    return Client(raise_request_exception=False)


@pytest.fixture
def no_mail_server(settings):
    """Mail as deployed: SMTP, with nothing listening. Sending anything would be a 500."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", port, 2


def reset_link(user: User) -> str:
    uidb36 = user_pk_to_url_str(user)
    return f"/accounts/password/reset/key/{uidb36}-{default_token_generator.make_token(user)}/"


def assert_not_offered(response) -> None:
    assert response.status_code == 404
    page = response.content.decode()
    assert "Not available on Ephemera" in page
    assert "python manage.py changepassword" in page


@pytest.mark.usefixtures("no_mail_server")
@pytest.mark.parametrize(
    "url",
    [
        "/accounts/password/reset/",
        "/accounts/password/reset/done/",
        "/accounts/password/reset/key/1-set-abc123/",
        "/accounts/password/reset/key/done/",
    ],
)
def test_password_reset_pages_are_not_offered(client, url):
    assert_not_offered(client.get(url))


def test_asking_for_a_reset_mails_nobody(client, two_orgs, operator):
    alpha, _ = two_orgs
    operator.email = "ops@platform.test"
    operator.save()

    for address in (alpha.users[Role.MEMBER].email, operator.email, "stranger@elsewhere.test"):
        assert_not_offered(client.post("/accounts/password/reset/", {"email": address}))

    assert mail.outbox == []


@pytest.mark.usefixtures("no_mail_server")
def test_asking_for_a_reset_with_no_mail_server_is_no_error(client, operator):
    operator.email = "ops@platform.test"
    operator.save()

    assert_not_offered(client.post("/accounts/password/reset/", {"email": operator.email}))


def test_a_genuine_reset_link_cannot_change_the_operators_password(client, operator):
    link = reset_link(operator)

    assert_not_offered(client.get(link))
    response = client.post(link, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})

    assert_not_offered(response)
    operator.refresh_from_db()
    assert operator.check_password(PASSWORD)


def test_local_sign_up_is_not_offered(client):
    response = client.post(
        "/accounts/signup/",
        {"email": "x@x.test", "username": "x", "password1": PASSWORD, "password2": PASSWORD},
    )

    assert_not_offered(response)
    assert not User.objects.filter(username="x").exists()
    assert not response.wsgi_request.user.is_authenticated


@pytest.fixture
def google_member(db) -> User:
    """A member as Google sign-in creates them: no usable password."""
    member = UserFactory(username="ada", email="ada@acme.test")
    member.set_unusable_password()
    member.save()
    return member


def test_a_google_member_cannot_give_themselves_a_password(client, google_member):
    client.force_login(google_member)

    assert_not_offered(client.get("/accounts/password/set/"))
    response = client.post(
        "/accounts/password/set/", {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD}
    )

    assert_not_offered(response)
    google_member.refresh_from_db()
    assert not google_member.has_usable_password()


def test_a_member_cannot_add_addresses_or_have_mail_sent(client, settings, google_member):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    client.force_login(google_member)

    response = client.post("/accounts/email/", {"action_add": "", "email": "ada@elsewhere.test"})

    assert_not_offered(response)
    assert not EmailAddress.objects.filter(email="ada@elsewhere.test").exists()
    assert mail.outbox == []
    assert_not_offered(client.get("/accounts/confirm-email/some-key/"))


def test_the_sign_in_page_tells_the_operator_how_to_recover_a_password(client):
    page = client.get("/accounts/login/").content.decode()

    assert "python manage.py changepassword" in page


# --- Password sign-in while the cache (Redis) is out of reach -----------------------------


@pytest.fixture
def redis_refusing(settings, monkeypatch):
    """Redis down: its port refuses every connection."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.CACHES = caches_as_deployed(monkeypatch, f"redis://127.0.0.1:{port}/0")


def assert_sign_in_unavailable(response) -> None:
    assert response.status_code == 503
    assert response["Retry-After"] == "30"
    assert "Sign-in is temporarily unavailable" in response.content.decode()
    assert not response.wsgi_request.user.is_authenticated


@pytest.mark.usefixtures("redis_refusing")
def test_with_redis_down_password_sign_in_refuses_clearly(client, operator):
    assert client.get("/accounts/login/").status_code == 200  # the form itself needs no cache

    response = client.post("/accounts/login/", {"login": "operator", "password": PASSWORD})

    assert_sign_in_unavailable(response)
    assert not client.get("/").wsgi_request.user.is_authenticated


@pytest.mark.usefixtures("redis_refusing")
@pytest.mark.parametrize(
    ("url", "form"),
    [
        (
            "/accounts/password/change/",
            {"oldpassword": PASSWORD, "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
        ),
        ("/accounts/reauthenticate/", {"password": PASSWORD}),
    ],
)
def test_with_redis_down_the_operators_password_pages_refuse_clearly(client, operator, url, form):
    client.force_login(operator)

    response = client.post(url, form)

    assert response.status_code == 503
    assert "Sign-in is temporarily unavailable" in response.content.decode()
    operator.refresh_from_db()
    assert operator.check_password(PASSWORD)


@pytest.mark.usefixtures("redis_hung")
def test_with_redis_hung_password_sign_in_refuses_within_the_cache_timeout(client, operator):
    started = time.monotonic()
    response = client.post("/accounts/login/", {"login": "operator", "password": PASSWORD})
    waited = time.monotonic() - started

    assert_sign_in_unavailable(response)
    assert waited < 4.5  # redis-py's own default waits 5 s; the settings bound it to 2 s


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("redis_refusing")
def test_with_redis_down_google_sign_in_still_works(client, fake_google):
    organization = OrganizationFactory(name="Acme", slug="acme")
    DomainFactory(organization=organization, name="acme.test", is_verified=True)
    claims = {"email": "ada@acme.test", "email_verified": True, "name": "Ada", "hd": "acme.test"}

    response = fake_google.sign_in(client, sub="ada-redis-down", **claims)

    assert response.status_code == 302
    home = client.get(response["Location"], follow=True)
    assert home.status_code == 200
    assert home.wsgi_request.user.email == "ada@acme.test"


# --- Every /accounts/ page a person can reach: the portal's look, or closed ---------------


def _allauth_paths(patterns=None, prefix: str = "") -> list[str]:
    """Every URL allauth serves under /accounts/, its parameters filled with sample values."""
    import allauth.urls
    from django.urls import URLResolver

    samples = {"key": "sample-key", "uidb36": "1"}
    paths = []
    for pattern in allauth.urls.urlpatterns if patterns is None else patterns:
        route = str(pattern.pattern)
        if route.startswith("^"):  # a regex: one sample value per named group
            route = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda group: samples[group[1]], route)
            route = route.strip("^$")
        if isinstance(pattern, URLResolver):
            paths += _allauth_paths(pattern.url_patterns, prefix + route)
        else:
            paths.append(f"/accounts/{prefix}{route}")
    return paths


ALLAUTH_PATHS = _allauth_paths()
CLOSED = {404, 405}


def test_the_table_covers_every_page_allauth_serves():
    """An allauth upgrade that adds a page shows up here, and in the table below."""
    assert len(ALLAUTH_PATHS) == len(set(ALLAUTH_PATHS)) >= 26
    assert "/accounts/3rdparty/signup/" in ALLAUTH_PATHS
    assert "/accounts/google/login/callback/" in ALLAUTH_PATHS


def assert_portal_page_or_closed(response) -> None:
    page = response.content.decode()
    landed_on = response.request["PATH_INFO"]
    if response.status_code in CLOSED or not landed_on.startswith("/accounts/"):
        return  # closed, or sent on to the portal itself (the admin, the member's home)
    assert response.status_code in {200, 401, 403}, response.status_code
    assert '<header class="topbar">' in page, "not drawn on the portal's base template"
    assert "ephemera/site.css" in page
    assert "example.com" not in page
    assert "Menu:" not in page  # allauth's own bare layout
    if landed_on != "/accounts/login/":  # a way on from here
        assert 'href="/accounts/login/"' in page or "Sign out" in page


@pytest.mark.parametrize("who", ["anonymous", "member", "operator"])
@pytest.mark.parametrize("path", ALLAUTH_PATHS)
def test_every_accounts_page_has_the_portals_look_or_is_closed(client, path, who, request):
    if who != "anonymous":
        client.force_login(request.getfixturevalue("google_member" if who == "member" else who))

    response = client.get(path, follow=True)

    assert_portal_page_or_closed(response)
    for url, _ in response.redirect_chain:
        assert url.startswith("/"), url  # never off to another site


@pytest.mark.parametrize("path", ["/accounts/3rdparty/signup/", "/accounts/social/signup/"])
def test_the_third_party_sign_up_form_is_unreachable(client, path):
    response = client.get(path, follow=True)

    assert_not_offered(response)
    assert 'name="email"' not in response.content.decode()


def test_the_sign_in_page_draws_googles_button(client):
    page = client.get("/accounts/login/").content.decode()

    button = page[page.index('id="google-sign-in"') : page.index("</button>")]
    assert "Sign in with Google" in button
    for colour in ("#EA4335", "#4285F4", "#FBBC05", "#34A853"):  # the four-colour G
        assert colour in button
    assert 'class="gsi-button"' in page


def test_browsers_asking_for_favicon_ico_get_the_portals_icon(client):
    from django.contrib.staticfiles import finders

    response = client.get("/favicon.ico")

    assert response.status_code == 302
    assert response["Location"] == "/static/ephemera/favicon.svg"
    assert finders.find("ephemera/favicon.svg")
    login = client.get("/accounts/login/").content.decode()
    assert '<link rel="icon" href="/static/ephemera/favicon.svg"' in login


def test_the_admin_carries_the_favicon_too(client, operator):
    client.force_login(operator)

    page = client.get("/admin/").content.decode()

    assert '<link rel="icon" href="/static/ephemera/favicon.svg"' in page
