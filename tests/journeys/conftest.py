"""A live portal for the browser journeys, and Debian's chromium driven by Playwright.

- The portal: the real ASGI app under uvicorn on a free port, in a thread of the test process,
  on pytest-django's committed (``transaction=True``) test database.
- Google: the ``oidc_server`` fixture (oidc-provider-mock), where allauth's Google provider
  already points in the test settings.
- Gemini: the in-repo sandbox upstream (``SandboxServer``), as ``manage.py dev`` runs it.
"""

import os
import tempfile

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command

from apps.issuance import gateway
from apps.issuance.sandbox import SandboxServer
from tests.journeys.support import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    ConsoleWatch,
    GoogleInTheBrowser,
    Screenshots,
)
from tests.live import serve_portal


def _browser_missing_reason() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing"
    return None


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's chromium, or a skip; a failure when EPHEMERA_REQUIRE_BROWSER=1 (CI)."""
    reason = _browser_missing_reason()
    if reason is not None:
        if os.environ.get("EPHEMERA_REQUIRE_BROWSER") == "1":
            pytest.fail(f"Browser journeys must run (EPHEMERA_REQUIRE_BROWSER=1), but {reason}.")
        pytest.skip(f"Browser journeys skipped: {reason}.")
    return str(CHROMIUM)


@pytest.fixture(scope="session")
def collected_static():
    """The admin's CSS and JS, collected as a deployment does; WhiteNoise serves STATIC_ROOT."""
    call_command("collectstatic", interactive=False, verbosity=0)


@pytest.fixture(scope="session")
def sandbox_upstream():
    with SandboxServer() as server:
        yield server


@pytest.fixture
def portal_url(transactional_db, settings, sandbox_upstream, collected_static, oidc_server):
    """The portal under uvicorn in a thread; it mints through the sandbox, never Google."""
    settings.GEMINI_BASE_URL = sandbox_upstream.url
    settings.GEMINI_API_KEY = "sandbox-journey-key"  # the platform key, as `make dev` sets one
    settings.GEMINI_TIMEOUT_MS = 5000
    sandbox_upstream.state.received.clear()
    gateway.clients.clear()
    with serve_portal() as url:  # built now, so WhiteNoise sees the collected files
        yield url


class Browsers:
    """One chromium per person, each with a fresh user-data-dir, so sessions never mix."""

    def __init__(self, playwright, executable: str, portal_url: str, workdir: str):
        self.playwright = playwright
        self.executable = executable
        self.portal_url = portal_url
        self.workdir = workdir
        self.contexts = []
        self.console = ConsoleWatch(portal_origin=portal_url)

    def open(self, actor: str, **options):
        """A page in ``actor``'s own browser; ``options`` go to Playwright's context (a
        ``timezone_id`` and ``locale``, say, for a person elsewhere)."""
        context = self.playwright.chromium.launch_persistent_context(
            tempfile.mkdtemp(prefix=f"{actor}-", dir=self.workdir),
            executable_path=self.executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
            accept_downloads=True,
            **options,
        )
        context.set_default_timeout(15_000)
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=self.portal_url)
        self.console.attach(context, actor)
        self.contexts.append(context)
        return context.pages[0] if context.pages else context.new_page()

    def capture_failure(self, directory):
        """Where each person's browser was when the journey failed."""
        directory.mkdir(parents=True, exist_ok=True)
        for number, context in enumerate(self.contexts):
            for page in context.pages:
                page.screenshot(path=directory / f"failed-{number}-{page.url.split('/')[3]}.png")

    def close(self):
        for context in self.contexts:
            context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.journey_failed = report.failed
    return report


@pytest.fixture
def browsers(request, chromium_path, portal_url, tmp_path):
    """Started after the live portal and the database, stopped before either goes away.

    While Playwright's sync API runs, the test's thread has an event loop: ORM work in the
    test goes through ``support.orm``.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browsers = Browsers(playwright, chromium_path, portal_url, str(tmp_path))
        try:
            yield browsers
        finally:
            if getattr(request.node, "journey_failed", False):
                browsers.capture_failure(ARTIFACTS)
            browsers.close()


@pytest.fixture
def google_in_browser(oidc_server) -> GoogleInTheBrowser:
    return GoogleInTheBrowser(django_settings.GOOGLE_OAUTH_MOCK_URL)


@pytest.fixture
def screenshots() -> Screenshots:
    return Screenshots()
