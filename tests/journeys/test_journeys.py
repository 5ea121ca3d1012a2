"""Browser journeys (issue 6, item 6): Debian's chromium through the real portal.

One test, because each step builds on the one before: the operator onboards an organisation;
its owner signs in with (fake) Google and invites an admin and an auditor; the admin sets up
a profile, an app and a key; a client backend gets a token with `curl`; the auditor follows
that grant through every door the console offers. Each step leaves a full-page screenshot in
var/artifacts/journeys/, and no page of the portal may log a console error or CSP violation.
"""

import csv
import io
import json
import shutil
import subprocess
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone
from django.utils.html import escape, format_html_join

from apps.audit.models import TokenGrant
from apps.audit.services import RunTally, usage_rollup
from apps.tenants.models import Membership, Role, User
from tests.journeys.support import orm

pytestmark = pytest.mark.django_db(transaction=True)

OPERATOR_PASSWORD = "journey-operator-password"
ORG, SLUG, DOMAIN = "Globex", "globex", "globex.test"
OWNER = "olivia@globex.test"  # first owner: invited by the operator, signs in on the domain
ADMIN = "adam@globex.test"  # a Workspace user of the domain, invited as admin by the owner
AUDITOR = "arthur@partner.test"  # outside the domain: gets in by invitation alone
PROFILE, PROFILE_LABEL = "globex-voice", "Globex voice (globex-voice)"
APP = "Globex web"
END_USER = "journey-caller-7"
CONFIG = {"response_modalities": ["AUDIO"], "temperature": 0.4}


def test_operator_owner_admin_backend_and_auditor(
    browsers, portal_url, google_in_browser, screenshots
):
    orm(User.objects.create_superuser, "operator", "ops@ephemera.test", OPERATOR_PASSWORD)

    operator_onboards_the_organisation(browsers.open("operator"), portal_url, screenshots)
    owner_signs_in_and_invites(browsers.open("owner"), portal_url, google_in_browser, screenshots)
    raw_key = admin_sets_up_profile_app_and_key(
        browsers.open("admin"), portal_url, google_in_browser, screenshots
    )
    token, grant_id = backend_gets_a_token_with_curl(
        browsers.open("backend"), portal_url, screenshots, raw_key
    )
    auditor_follows_the_grant(
        browsers.open("auditor"), portal_url, google_in_browser, screenshots, token, grant_id
    )

    # What the pages showed is what the database holds.
    grant = orm(lambda: TokenGrant.objects.select_related("client_app").get(public_id=grant_id))
    assert (grant.end_user, grant.outcome, grant.client_app.name) == (END_USER, "issued", APP)
    assert grant.client_key_prefix in raw_key
    roles = orm(
        lambda: dict(
            Membership.objects.filter(organization__slug=SLUG).values_list("user__email", "role")
        )
    )
    assert roles == {OWNER: Role.OWNER, ADMIN: Role.ADMIN, AUDITOR: Role.AUDITOR}
    assert browsers.console.errors == [], "\n".join(browsers.console.errors)


# --- 1. the platform operator -------------------------------------------------------------


def operator_onboards_the_organisation(page, portal_url, shots):
    """Password sign-in, a new organisation, its domain claimed then verified, an owner invited."""
    page.goto(f"{portal_url}/admin/")  # the admin sends strangers to the one sign-in page
    page.get_by_text("Platform operator sign-in").click()
    page.fill("#id_login", "operator")
    page.fill("#id_password", OPERATOR_PASSWORD)
    page.get_by_role("button", name="Sign in with password").click()
    page.wait_for_url(f"{portal_url}/admin/")

    page.goto(f"{portal_url}/admin/tenants/organization/add/")
    page.locator("#id_name").press_sequentially(ORG)  # typed: the slug fills in from the name
    assert page.input_value("#id_slug") == SLUG
    save(page)
    expect_message(page, f"The organisation “{ORG}” was added successfully.")
    shots.take(page, "operator-created-organisation")

    page.select_option("#org-switcher-select", label=ORG)
    page.get_by_role("button", name="Switch").click()
    expect_message(page, f"Now working in {ORG}.")
    page.goto(f"{portal_url}/admin/tenants/domain/add/")
    page.fill("#id_name", DOMAIN)
    save(page)
    row = page.locator("#result_list tbody tr", has_text=DOMAIN)
    assert row.locator("td.field-is_verified img").get_attribute("alt") == "False"
    row.locator("input.action-select").check()
    page.select_option("select[name=action]", "verify_domains")
    page.get_by_role("button", name="Go").click()
    expect_message(page, "Verified 1 domain(s).")
    assert row.locator("td.field-is_verified img").get_attribute("alt") == "True"
    shots.take(page, "operator-claimed-and-verified-domain")

    invite(page, portal_url, OWNER, "Owner")
    shots.take(page, "operator-invited-owner")


# --- 2. the organisation's owner ----------------------------------------------------------


def owner_signs_in_and_invites(page, portal_url, google, shots):
    """Google sign-in with the verified domain's hd; the invitation makes her the owner."""
    google.sign_in(page, portal_url, sub="olivia", email=OWNER, email_verified=True, hd=DOMAIN)
    expect_role(page, "Owner")
    shots.take(page, "owner-signed-in-with-google")

    invite(page, portal_url, ADMIN, "Admin")
    invite(page, portal_url, AUDITOR, "Auditor")
    invitations = page.locator("#result_list tbody").inner_text()
    assert "accepted" in invitations and invitations.count("pending") == 2, invitations
    shots.take(page, "owner-invited-admin-and-auditor")


# --- 3. the organisation's admin ----------------------------------------------------------


def admin_sets_up_profile_app_and_key(page, portal_url, google, shots) -> str:
    """A profile with locked fields and its wire preview, an app allowed it, a key copied."""
    google.sign_in(page, portal_url, sub="adam", email=ADMIN, email_verified=True, hd=DOMAIN)
    expect_role(page, "Admin")

    page.goto(f"{portal_url}/admin/policies/liveconstraintprofile/add/")
    page.locator("#id_name").press_sequentially("Globex voice")
    assert page.input_value("#id_slug") == PROFILE
    page.select_option("#id_model", "gemini-2.0-flash-live-001")
    page.fill("#id_config", json.dumps(CONFIG))
    page.select_option("#id_lock_mode", "fields_set_plus")
    page.fill("#id_lock_additional_fields", "tools")  # clients may not bring their own tools
    page.get_by_role("button", name="Save and continue editing").click()
    expect_message(page, "was added successfully")
    locked = page.locator(".field-locked_fields .readonly").inner_text()
    assert locked.split(", ") == [
        "model",
        "generationConfig.responseModalities",
        "generationConfig.temperature",
        "tools",
    ]
    assert page.locator(".field-preview_warnings .readonly").inner_text() == "None"
    wire = json.loads(page.locator("#wire-preview").inner_text())  # what the SDK will POST
    assert wire["bidiGenerateContentSetup"]["generationConfig"]["temperature"] == 0.4
    assert wire["fieldMask"].split(",") == locked.split(", ")
    shots.take(page, "admin-profile-and-wire-preview")

    page.goto(f"{portal_url}/admin/clients/clientapp/add/")
    page.fill("#id_name", APP)
    page.select_option("#id_allowed_profiles_from", label=PROFILE_LABEL)
    page.locator("#id_allowed_profiles_add").click()  # the admin's two-box chooser
    page.fill("#id_allowed_origins", "https://app.globex.test")
    page.get_by_role("button", name="Save and continue editing").click()
    expect_message(page, f"The client app “{APP}” was added successfully.")
    assert page.locator("#id_allowed_profiles_to option").all_inner_texts() == [PROFILE_LABEL]
    page.fill("#new-key-label", "Globex backend")  # a key is named when it is made
    with page.expect_response(lambda response: response.url.endswith("/created/")) as made:
        page.locator("#create-key").click()  # POST, then the redirect's GET shows it once
    assert made.value.status == 200
    assert "no-store" in made.value.headers["cache-control"]  # not kept in any cache

    new_key = page.locator("#new-key")
    raw_key = new_key.inner_text().strip()
    assert raw_key.startswith("eph_")
    page.get_by_role("button", name="Copy").click()
    page.get_by_role("button", name="Copied").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == raw_key
    shots.take(page, "admin-key-shown-once", mask=[new_key])  # the picture never shows the key

    page.get_by_role("link", name=f"Back to {APP}").click()
    page.wait_for_url(f"{portal_url}/admin/clients/clientapp/*/change/")
    assert raw_key not in page.content()  # shown once means once
    return page.evaluate("navigator.clipboard.readText()")  # what the admin pastes onwards


# --- 4. the organisation's backend --------------------------------------------------------


def backend_gets_a_token_with_curl(page, portal_url, shots, raw_key) -> tuple[str, str]:
    """`curl`, as the README shows it; httpx only where curl is not installed."""
    url = f"{portal_url}/api/v1/tokens"
    payload = json.dumps({"profile": PROFILE, "end_user": END_USER})
    headers = {"Authorization": f"Bearer {raw_key}", "Content-Type": "application/json"}
    curl = shutil.which("curl")
    if curl is None:
        response = httpx.post(url, content=payload, headers=headers, timeout=20)
        status, body = response.status_code, response.json()
    else:
        # The key goes in on stdin (curl's config syntax), not on a command line ps can read.
        config = "".join(f'header = "{name}: {value}"\n' for name, value in headers.items())
        result = subprocess.run(  # noqa: S603 (curl, fixed arguments)
            [
                curl,
                "-sS",
                "--max-time",
                "20",
                "-K",
                "-",
                "-d",
                payload,
                "-w",
                "\n%{http_code}",
                url,
            ],
            input=config,
            capture_output=True,
            text=True,
            check=True,
        )
        text, _, code = result.stdout.rpartition("\n")
        status, body = int(code), json.loads(text)

    assert status == 201, body
    assert body["sandbox"] is True  # minted by the sandbox upstream, never Google
    assert (body["profile"], body["model"], body["uses"]) == (
        PROFILE,
        "gemini-2.0-flash-live-001",
        1,
    )
    assert "tools" in body["locked_fields"]
    shown = {**body, "token": body["token"][:12] + "… (redacted)"}
    command = (
        f"curl -s -X POST {url} \\\n  -H 'Authorization: Bearer eph_… (redacted)' \\\n"
        f"  -H 'Content-Type: application/json' \\\n  -d '{payload}'"
    )
    show(
        page,
        "A client backend asks for a token",
        f"<pre>$ {escape(command)}</pre><p>HTTP {status}</p>"
        f"<pre>{escape(json.dumps(shown, indent=2, ensure_ascii=False))}</pre>",
    )
    shots.take(page, "backend-got-token-with-curl")
    return body["token"], body["grant_id"]


# --- 5. the auditor -----------------------------------------------------------------------


def auditor_follows_the_grant(page, portal_url, google, shots, token, grant_id):
    """By invitation only; finds the grant by end user, exports it, looks it up by token,
    and sees it counted on the dashboard."""
    google.sign_in(page, portal_url, sub="arthur", email=AUDITOR, email_verified=True)
    expect_role(page, "Auditor")

    page.locator("#nav-grants").click()
    page.fill("#searchbar", END_USER)
    page.locator("#searchbar").press("Enter")
    page.wait_for_url(f"{portal_url}/admin/audit/tokengrant/?q={END_USER}")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1
    cells = rows.first.inner_text()
    for shown in (grant_id[:8], "Issued", "Active", APP, PROFILE, END_USER):  # id shortened
        assert shown in cells, cells
    shots.take(page, "auditor-found-grant-by-end-user")

    with page.expect_download() as download:
        page.locator("#export-csv").click()  # the filtered set: this search's one grant
    exported = download.value.path().read_text()
    download.value.save_as(shots.directory / "grants-export.csv")
    records = list(csv.DictReader(io.StringIO(exported)))
    assert [(r["public_id"], r["end_user"], r["outcome"]) for r in records] == [
        (grant_id, END_USER, "issued")
    ]
    assert token not in exported and token.split("/")[-1] not in exported
    grants_page = page.url
    columns = ("public_id", "outcome", "client_app_name", "end_user", "profile_slug", "uses")
    show(
        page,
        f"Exported {download.value.suggested_filename}",
        "<table border='1' cellpadding='4'><tr>{}</tr>{}</table>".format(
            format_html_join("", "<th>{}</th>", ((c,) for c in columns)),
            format_html_join(
                "",
                "<tr>" + "<td>{}</td>" * len(columns) + "</tr>",
                ([r[c] for c in columns] for r in records),
            ),
        ),
    )
    shots.take(page, "auditor-exported-csv")

    page.goto(grants_page)
    page.get_by_role("link", name="Look up a token").click()
    pasted = page.locator("#token-lookup textarea[name=token]")
    pasted.fill(token)
    shots.take(page, "auditor-pasted-token", mask=[pasted])
    page.get_by_role("button", name="Find the grant").click()
    page.wait_for_url(f"{portal_url}/admin/audit/tokengrant/*/change/")
    assert page.locator(".field-public_id .readonly").inner_text() == grant_id
    assert page.locator(".field-end_user .readonly").inner_text() == END_USER
    assert token not in page.content()
    shots.take(page, "auditor-lookup-opened-grant")

    # The dashboard reads UsageDaily, which Celery beat's `rollup_usage` task fills every five
    # minutes. Standing in for beat, the test calls the task's service in this process, two
    # minutes ahead so the grant is past AUDIT_SETTLE_SECONDS.
    orm(usage_rollup, tally=RunTally(), now=timezone.now() + timedelta(minutes=2))
    page.locator("#nav-dashboard").click()
    assert page.locator("#total-issued").inner_text() == "1"
    assert page.locator("#active-now").inner_text() == "1"
    issued_on = orm(lambda: TokenGrant.objects.get(public_id=grant_id).requested_at.date())
    bar = page.locator(
        "#usage-chart rect", has=page.locator("title", has_text=f"{issued_on}: 1 issued")
    )
    assert bar.count() == 1 and float(bar.get_attribute("height")) > 0
    assert page.locator("#top-apps").inner_text().split() == [*APP.split(), "1"]
    shots.take(page, "auditor-dashboard-chart")


# --- helpers ------------------------------------------------------------------------------


def save(page) -> None:
    page.get_by_role("button", name="Save", exact=True).click()


def expect_message(page, text: str) -> None:
    """Waits for it: the page before the click may still be showing an older message."""
    from playwright.sync_api import expect

    expect(page.locator("ul.messagelist")).to_contain_text(text)


def expect_role(page, role: str) -> None:
    assert page.url.endswith("/admin/"), page.url
    assert page.locator("#org-switcher-select option:checked").inner_text() == ORG
    assert page.locator("#org-switcher .org-role").text_content() == role


def invite(page, portal_url: str, email: str, role: str) -> None:
    page.goto(f"{portal_url}/admin/tenants/invitation/add/")
    page.fill("#id_email", email)
    page.select_option("#id_role", label=role)
    save(page)
    expect_message(page, f"The invitation “{email} to {ORG}” was added successfully.")


def show(page, title: str, body: str) -> None:
    """Draw a step that has no page of its own (curl, a download) on a blank page, which
    carries none of the portal's CSP."""
    title = escape(title)
    page.goto("about:blank")
    page.set_content(
        f"<!doctype html><meta charset='utf-8'><title>{title}</title>"
        f"<body style='font: 14px monospace; margin: 2em'><h1>{title}</h1>{body}</body>"
    )
