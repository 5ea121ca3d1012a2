"""Security headers, the Content-Security-Policy, probes answered ahead of host checks, and
Django's middleware run on the event loop under ASGI without changing what it does."""

import asyncio
import base64
import hashlib
import json
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import django
import httpx
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import middleware as auth_middleware
from django.contrib.messages import middleware as messages_middleware
from django.contrib.sessions import middleware as sessions_middleware
from django.core.asgi import get_asgi_application
from django.http import HttpResponse, HttpResponseRedirect
from django.middleware import clickjacking, common, csrf, security
from django.test import AsyncClient, Client
from django.urls import path, reverse

from apps.audit.models import TokenGrant
from apps.issuance import gateway
from apps.issuance.contract import ERROR_CODES_BY_NAME
from apps.issuance.sandbox import SandboxServer
from portal.asgi import build_application
from portal.middleware import csp_header

pytestmark = pytest.mark.django_db


class InlineCode(HTMLParser):
    """Everything in a page that a CSP without 'unsafe-inline' would refuse or must hash."""

    def __init__(self):
        super().__init__()
        self.scripts: list[str] = []  # inline scripts that would execute
        self.styles: list[str] = []  # <style> bodies
        self.attributes: list[str] = []  # on*= handlers, style=, javascript: URLs
        self._open: str | None = None

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.attributes.append(f"<{tag} {name}={value!r}>")
            if name in ("href", "src", "action") and (value or "").startswith("javascript:"):
                self.attributes.append(f"<{tag} {name}={value!r}>")
        data_only = values.get("type") in ("application/json", "application/ld+json")
        if (tag == "script" and "src" not in values and not data_only) or tag == "style":
            self._open = tag
            (self.scripts if tag == "script" else self.styles).append("")

    def handle_data(self, data):
        if self._open == "script":
            self.scripts[-1] += data
        elif self._open == "style":
            self.styles[-1] += data

    def handle_endtag(self, tag):
        if tag == self._open:
            self._open = None


def sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def assert_runs_under_the_policy(response) -> None:
    assert response.status_code == 200, response
    policy = response["Content-Security-Policy"]
    page = InlineCode()
    page.feed(response.content.decode())
    assert page.scripts == [], f"{response.wsgi_request.path}: inline script"
    assert page.attributes == [], f"{response.wsgi_request.path}: {page.attributes}"
    for style in page.styles:
        assert sha256_source(style) in policy, f"{response.wsgi_request.path}: inline <style>"


def assert_security_headers(response) -> None:
    assert response["Content-Security-Policy"] == csp_header(settings.SECURE_CSP)
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


def test_the_policy_allows_nothing_inline_and_nothing_foreign():
    policy = settings.SECURE_CSP

    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]
    assert "'unsafe-inline'" not in str(policy)
    assert "'unsafe-eval'" not in str(policy)
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["object-src"] == ["'none'"]
    # sign-in posts to us and is redirected to Google (the fake one under test)
    assert policy["form-action"] == ["'self'", settings.GOOGLE_OAUTH_MOCK_URL]


def test_the_admin_change_list_style_hash_matches_the_installed_django():
    template = Path(django.__file__).parent / "contrib/admin/templates/admin/change_list.html"
    (style,) = re.findall(r"<style>(.*?)</style>", template.read_text(), re.S)

    assert sha256_source(style) in settings.SECURE_CSP["style-src"]


def test_csp_header_serialises_directives_in_order():
    assert (
        csp_header({"default-src": ["'self'"], "upgrade-insecure-requests": []})
        == "default-src 'self'; upgrade-insecure-requests"
    )


def test_admin_pages_carry_the_headers_and_need_nothing_inline(client, operator, two_orgs):
    client.force_login(operator)
    pages = [reverse("admin:index")]
    forms = [reverse("admin:tenants_organization_change", args=[two_orgs[0].organization.pk])]
    for model in admin.site._registry:
        prefix = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        pages.append(reverse(f"{prefix}_changelist"))
        forms.append(reverse(f"{prefix}_add"))

    for url in pages:
        response = client.get(url)
        assert_security_headers(response)
        assert_runs_under_the_policy(response)
    scanned = 0
    for url in forms:  # some add forms are the operator's or need an active organisation
        response = client.get(url)
        if response.status_code == 200:
            assert_runs_under_the_policy(response)
            scanned += 1
    assert scanned >= 3


def test_api_docs_carry_the_headers_and_need_nothing_inline(client):
    response = client.get("/api/v1/docs")

    assert_security_headers(response)
    assert_runs_under_the_policy(response)
    assert "swagger-ui-bundle.js" in response.content.decode()  # served by us, not a CDN


def test_sign_in_page_needs_nothing_inline(client):
    response = client.get(reverse("account_login"))

    assert_security_headers(response)
    assert_runs_under_the_policy(response)


def test_debug_error_pages_go_without_a_policy_and_production_ones_keep_it(client, settings):
    assert "Content-Security-Policy" in client.get("/no-such-page/")
    settings.DEBUG = True

    assert "Content-Security-Policy" not in Client().get("/no-such-page/")  # inline debug page


def test_hsts_is_sent_over_https_only(client):
    secure = client.get("/api/v1/docs", secure=True)
    plain = client.get("/api/v1/docs")

    assert secure["Strict-Transport-Security"] == ("max-age=31536000; includeSubDomains; preload")
    assert "Strict-Transport-Security" not in plain


def test_session_and_csrf_cookies_are_locked_down(client, settings):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True

    response = client.get(reverse("account_login"), secure=True)

    csrf = response.cookies[settings.CSRF_COOKIE_NAME]
    assert csrf["secure"] and csrf["httponly"] and csrf["samesite"] == "Lax"
    assert settings.SESSION_COOKIE_HTTPONLY and settings.SESSION_COOKIE_SAMESITE == "Lax"


def test_probes_answer_a_load_balancer_by_address_over_plain_http(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.ALLOWED_HOSTS = ["ephemera.example.com"]
    by_address = {"HTTP_HOST": "10.0.3.7:8000"}

    assert client.get("/healthz", **by_address).status_code == 200
    assert client.get("/readyz", **by_address).status_code == 200
    assert client.head("/healthz", **by_address).status_code == 200
    # everything else still refuses a foreign host and insists on HTTPS
    assert client.get("/admin/", **by_address).status_code == 400
    assert client.get("/admin/", HTTP_HOST="ephemera.example.com").status_code == 301


def test_oversized_form_posts_are_refused_before_any_view_reads_them(client):
    too_long = "x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE

    response = client.post(reverse("account_login"), {"login": "operator", "password": too_long})

    assert response.status_code == 400
    assert b"Bad Request" in response.content


def preflight(client, origin: str):
    return client.options(
        "/api/v1/tokens", HTTP_ORIGIN=origin, HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST"
    )


@pytest.mark.usefixtures("redis_hung")
def test_with_redis_hung_a_preflight_is_answered_by_the_database_within_the_bound(client, two_orgs):
    started = time.monotonic()
    allowed = preflight(client, "https://alpha.test")
    waited = time.monotonic() - started
    refused = preflight(client, "https://evil.test")

    assert allowed.status_code == 204
    assert allowed["Access-Control-Allow-Origin"] == "https://alpha.test"
    assert waited < 4.5  # redis-py's own default waits 5 s; the settings bound it to 2 s
    assert refused.status_code == 204
    assert "Access-Control-Allow-Origin" not in refused


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_static_files_stream_asynchronously_under_asgi():
    """Django would otherwise read a sync file iterator whole, and warn, for every file."""
    from django.core.management import call_command
    from django.test import AsyncClient

    await sync_to_async(call_command)("collectstatic", interactive=False, verbosity=0)

    response = await AsyncClient().get(settings.STATIC_URL + "admin/css/base.css")

    assert response.status_code == 200
    assert response.is_async
    body = b"".join([chunk async for chunk in response.streaming_content])
    assert body == (Path(settings.STATIC_ROOT) / "admin/css/base.css").read_bytes()


# --- Django's middleware: Django's way on the Django path, inline on the short path ----------

# Every hook of Django's middleware in MIDDLEWARE, by the Django class that defines it.
DJANGO_HOOKS = {
    security.SecurityMiddleware: ("process_request", "process_response"),
    sessions_middleware.SessionMiddleware: ("process_request", "process_response"),
    common.CommonMiddleware: ("process_request", "process_response"),
    csrf.CsrfViewMiddleware: ("process_request", "process_view", "process_response"),
    auth_middleware.AuthenticationMiddleware: ("process_request",),
    messages_middleware.MessageMiddleware: ("process_request", "process_response"),
    clickjacking.XFrameOptionsMiddleware: ("process_response",),
}
# What the token endpoint's short path runs of them, inline (apps/issuance/asgi.py).
SHORT_PATH_HOOKS = {
    "SecurityMiddleware.process_request",
    "SecurityMiddleware.process_response",
    "CommonMiddleware.process_request",
    "CommonMiddleware.process_response",
    "XFrameOptionsMiddleware.process_response",
}


class HookLog(list):
    """(hook, ran on the event loop) for each middleware hook called, in order."""

    def threaded(self) -> set[str]:
        return {hook for hook, on_loop in self if not on_loop}

    def on_loop(self) -> set[str]:
        return {hook for hook, on_loop in self if on_loop}

    def where(self, hook: str) -> set[bool]:
        return {on_loop for name, on_loop in self if name == hook}


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # a sync_to_async worker thread
        return False
    return True


@pytest.fixture
def hooks(monkeypatch) -> HookLog:
    """Records where each hook of Django's middleware runs (patched before the chain is built)."""
    log = HookLog()
    for cls, names in DJANGO_HOOKS.items():
        for name in names:
            original = getattr(cls, name)

            def spy(self, *args, _original=original, _hook=f"{cls.__name__}.{name}"):
                log.append((_hook, _on_event_loop()))
                return _original(self, *args)

            monkeypatch.setattr(cls, name, spy)
    return log


def _visit(request):
    request.session["visits"] = request.session.get("visits", 0) + 1
    return HttpResponse(str(request.session["visits"]))


def _flash(request):
    messages.success(request, "Saved.")
    return HttpResponseRedirect("/read/")


def _read(request):
    return HttpResponse(" | ".join(str(message) for message in messages.get_messages(request)))


def _form(request):
    from django.middleware.csrf import get_token

    return HttpResponse(get_token(request) if request.method == "GET" else "accepted")


async def _quiet(request):
    return HttpResponse("quiet")


def _crash(request):
    raise RuntimeError("a bug outside ninja")


urlpatterns = [  # this module is the ROOT_URLCONF of the tests below that say so
    path("visit/", _visit),
    path("flash/", _flash),
    path("read/", _read),
    path("form/", _form),
    path("quiet/", _quiet),
    path("api/crash/", _crash),
    path("crash/", _crash),
]


@pytest.fixture
def probe_urls(settings):
    settings.ROOT_URLCONF = __name__


@pytest.fixture
def sandbox(settings):
    with SandboxServer() as server:
        settings.GEMINI_BASE_URL = server.url
        gateway.clients.clear()
        yield server
    gateway.clients.clear()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_client_apps_token_request_runs_djangos_middleware_inline(hooks, sandbox, two_orgs):
    """The short path, which client apps hit at volume: no hook hops to a thread (each hop
    costs about a millisecond: bench/middleware.py), and what they do is unchanged."""
    alpha, _ = two_orgs
    transport = httpx.ASGITransport(app=build_application(), client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.post(
            "/api/v1/tokens",
            json={"profile": "alpha-voice", "end_user": "u-1"},
            headers={"Authorization": f"Bearer {alpha.raw_client_key}"},
        )

    assert response.status_code == 201, response.content
    assert hooks.threaded() == set()
    assert hooks.on_loop() == SHORT_PATH_HOOKS
    assert "set-cookie" not in response.headers
    assert response.headers["Content-Length"] == str(len(response.content))
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_the_django_path_runs_djangos_own_middleware(hooks, probe_urls):
    client = AsyncClient()

    first = await client.get("/visit/")
    second = await client.get("/visit/")
    flashed = await client.get("/flash/")
    shown = await client.get("/read/")
    again = await client.get("/read/")

    assert (first.content, second.content) == (b"1", b"2")
    assert first.cookies[settings.SESSION_COOKIE_NAME].value
    assert (flashed.status_code, shown.content, again.content) == (302, b"Saved.", b"")
    assert hooks.threaded() >= {
        "SessionMiddleware.process_request",
        "SessionMiddleware.process_response",
        "MessageMiddleware.process_response",
    }


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_csrf_still_refuses_a_bad_token_under_asgi(probe_urls):
    client = AsyncClient(enforce_csrf_checks=True)
    token = (await client.get("/form/")).content.decode()

    forged = await client.post("/form/", {"csrfmiddlewaretoken": "x" * 64})
    missing = await client.post("/form/", {})
    good = await client.post("/form/", {"csrfmiddlewaretoken": token})

    assert forged.status_code == missing.status_code == 403
    assert good.status_code == 200 and good.content == b"accepted"


# --- Every answer under /api/ in the error contract's shape -------------------------------


async def answer(via: str, method: str, path: str, headers: dict | None = None):
    """One request through Django's test client or the deployed ASGI application (where a
    client key's token request takes the short path; Django's own ASGI handler under this
    module's urls, which have no API to take it to): (status, headers, body bytes)."""
    headers = headers or {}
    if via == "django":
        client = AsyncClient(raise_request_exception=False)
        response = await client.generic(method, path, headers=headers)
        return response.status_code, response.headers, response.content
    own_urls = __name__ == settings.ROOT_URLCONF
    application = get_asgi_application() if own_urls else build_application()
    transport = httpx.ASGITransport(app=application, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.request(method, path, headers=headers)
    return response.status_code, response.headers, response.content


def contract_error(status: int, headers, body: bytes, code: str) -> dict:
    assert headers["Content-Type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["code"] == code
    assert error["message"]
    assert ERROR_CODES_BY_NAME[code].status == status  # a code of the contract, at its status
    assert headers["Cache-Control"] == "no-store"
    assert headers["X-Request-ID"]
    return error


VIA = pytest.mark.parametrize("via", ["django", "asgi"])


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@VIA
@pytest.mark.parametrize("path", ["/api/v1/nope", "/api/", "/api/v2/tokens", "/api"])
async def test_an_unknown_api_path_is_a_json_not_found(via, path):
    status, headers, body = await answer(via, "GET", path)

    assert status == 404
    contract_error(status, headers, body, "not_found")
    assert headers["X-Content-Type-Options"] == "nosniff"  # SecurityMiddleware's, kept


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@VIA
@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [("GET", "/api/v1/tokens", "POST"), ("DELETE", "/api/v1/profiles", "GET")],
)
async def test_a_wrong_method_is_a_json_method_not_allowed_that_keeps_allow(
    via, method, path, allowed, two_orgs
):
    alpha, _ = two_orgs
    headers = {"Authorization": f"Bearer {alpha.raw_client_key}"}

    status, response_headers, body = await answer(via, method, path, headers)

    assert status == 405
    error = contract_error(status, response_headers, body, "method_not_allowed")
    assert response_headers["Allow"] == allowed
    assert allowed in error["message"]


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@VIA
@pytest.mark.parametrize("tls_required", [False, True], ids=["plain", "ssl-redirect"])
async def test_a_disallowed_host_is_a_json_invalid_request(via, tls_required, settings, two_orgs):
    """A client key's token request too, which the short path serves under ASGI; with the
    HTTPS redirect on, SecurityMiddleware is the one that finds the host bad."""
    alpha, _ = two_orgs
    settings.SECURE_SSL_REDIRECT = tls_required
    headers = {"Host": "evil.test", "Authorization": f"Bearer {alpha.raw_client_key}"}

    for method, url in (("POST", "/api/v1/tokens"), ("GET", "/api/v1/profiles")):
        status, response_headers, body = await answer(via, method, url, headers)

        assert status == 400
        error = contract_error(status, response_headers, body, "invalid_request")
        assert "Host" in error["message"]
    assert await TokenGrant.objects.acount() == 0


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@VIA
async def test_a_crash_outside_ninja_under_api_is_a_json_internal_error(via, probe_urls):
    status, headers, body = await answer(via, "GET", "/api/crash/")

    assert status == 500
    error = contract_error(status, headers, body, "internal_error")
    assert "RuntimeError" not in error["message"] and "bug" not in error["message"]


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@VIA
async def test_the_apis_own_errors_pass_through_untouched(via, two_orgs):
    status, _, body = await answer(
        via, "GET", "/api/v1/profiles", {"Authorization": "Bearer eph_nope"}
    )

    assert status == 401
    assert json.loads(body) == {
        "error": {
            "code": "unauthenticated",
            "message": "Send a valid client key: Authorization: Bearer eph_…",
        }
    }


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@VIA
async def test_errors_outside_the_api_keep_their_html(via, probe_urls):
    missing = await answer(via, "GET", "/no-such-page/")
    crashed = await answer(via, "GET", "/crash/")
    foreign = await answer(via, "GET", "/visit/", {"Host": "evil.test"})

    for (status, headers, _), expected in zip(
        (missing, crashed, foreign), (404, 500, 400), strict=True
    ):
        assert status == expected
        assert headers["Content-Type"].startswith("text/html")
