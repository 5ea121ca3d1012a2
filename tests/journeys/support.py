"""Helpers for the browser journeys: ORM access beside Playwright, screenshots, console watch."""

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests
from django.conf import settings
from django.db import connections

CHROMIUM = Path(os.environ.get("EPHEMERA_CHROMIUM", "/usr/bin/chromium"))
# Debian's chromium, as the brief for CI pins it: no browser is ever downloaded.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(settings.BASE_DIR) / "var" / "artifacts" / "journeys"
# The two sizes every page is seen at: a laptop and a phone.
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}

# Reported by the page itself: the browser logs CSP violations as console errors too, but
# this names the directive and the blocked source in one line.
CSP_REPORTER = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error(`CSP violation: ${event.violatedDirective} blocked ${event.blockedURI || "inline"}`
    + ` at ${event.sourceFile || location.href}:${event.lineNumber}`);
});
"""


def orm(work, /, *args, **kwargs):
    """Run database work on a thread of its own.

    Playwright's sync API keeps an event loop running on the test's thread, and Django
    refuses synchronous queries there (SynchronousOnlyOperation).
    """

    def run():
        try:
            return work(*args, **kwargs)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


@dataclass
class ConsoleWatch:
    """Console errors, uncaught page errors and CSP violations seen on the portal's pages.

    Pages of the fake Google (another origin, not our product) are recorded apart and not
    asserted on.
    """

    portal_origin: str
    errors: list[str] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)

    def attach(self, context, actor: str) -> None:
        context.add_init_script(CSP_REPORTER)
        context.on("console", lambda message: self._console(actor, message))
        context.on("weberror", lambda error: self._record(actor, error.page, str(error.error)))
        context.on("response", lambda response: self._response(actor, response))

    def _console(self, actor, message) -> None:
        if message.type != "error":
            return
        where = message.location.get("url") or ""
        self._record(actor, message.page, f"{message.text} ({where})")

    def _response(self, actor, response) -> None:
        if response.status >= 500:  # a server error is a failure even if no script notices
            self._record(actor, response.frame.page, f"HTTP {response.status} {response.url}")

    def _record(self, actor, page, text) -> None:
        url = page.url if page is not None else ""
        line = f"[{actor}] {url}: {text}"
        if url.startswith(f"{self.portal_origin}/"):
            self.errors.append(line)
        else:
            self.elsewhere.append(line)


class Screenshots:
    """Full-page screenshots, numbered in the journey's order: ``NN-step.png``."""

    def __init__(self, directory: Path = ARTIFACTS):
        self.directory = directory
        shutil.rmtree(directory, ignore_errors=True)  # only this run's pictures
        directory.mkdir(parents=True)
        self.taken: list[Path] = []

    def take(self, page, step: str, *, mask=()) -> Path:
        path = self.directory / f"{len(self.taken) + 1:02d}-{step}.png"
        page.screenshot(path=path, full_page=True, mask=list(mask))
        self.taken.append(path)
        return path

    def both_sizes(self, page, step: str, *, mask=()) -> None:
        """At desktop and phone size; on the phone nothing may push the page sideways."""
        page.set_viewport_size(DESKTOP)
        self.take(page, f"{step}-1440", mask=mask)
        page.set_viewport_size(PHONE)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{step}: {overflow}px of horizontal overflow at 390 px"
        self.take(page, f"{step}-390", mask=mask)
        page.set_viewport_size(DESKTOP)


class GoogleInTheBrowser:
    """Signs a person in through the fake Google's own consent page, in a real browser."""

    def __init__(self, base_url: str):
        self.base_url = base_url

    def sign_in(self, page, portal_url: str, *, sub: str, next_path: str = "/admin/", **claims):
        requests.put(f"{self.base_url}/users/{sub}", json=claims, timeout=5).raise_for_status()
        page.goto(f"{portal_url}{next_path}")  # the admin sends strangers to the sign-in page
        assert page.url.startswith(f"{portal_url}/accounts/login/"), page.url
        page.locator("#google-sign-in").click()
        page.wait_for_url(f"{self.base_url}/**")
        page.locator("input[name=sub]").fill(sub)
        page.get_by_role("button", name="Authorize").click()
        page.wait_for_url(f"{portal_url}{next_path}**")
