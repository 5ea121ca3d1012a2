"""Client apps and keys in the admin: a key is shown once, rotated with grace, revoked now."""

import json
import re
import time

import pytest
from django.contrib.sessions.models import Session
from django.test import AsyncClient

from apps.audit.models import PolicyChange
from apps.clients import shown_once
from apps.clients.models import ClientApp, ClientKey
from apps.clients.selectors import client_key_authenticate
from apps.issuance.store.base import key_use_writes_settled
from apps.tenants.models import Role
from tests.issuance.conftest import bearer

pytestmark = pytest.mark.django_db


def app_url(app, suffix=""):
    return f"/admin/clients/clientapp/{app.pk}/{suffix}"


def shown_key(response) -> str | None:
    found = re.search(
        r'id="new-key" class="new-key">(eph_[A-Za-z0-9_]+)<', response.content.decode()
    )
    return found.group(1) if found else None


def key_count(app) -> int:
    return ClientKey.objects.filter(client_app=app).count()


def test_admin_creates_an_app_and_copies_its_key_once(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.ADMIN])
    response = client.post(
        "/admin/clients/clientapp/add/",
        {
            "name": "Kiosk",
            "description": "",
            "allowed_profiles": [alpha.profile.pk],
            "allowed_origins": "https://kiosk.alpha.test\nhttp://localhost:3000/",
            "is_active": "on",
            "quotas-TOTAL_FORMS": "0",
            "quotas-INITIAL_FORMS": "0",
            "quotas-MIN_NUM_FORMS": "0",
            "quotas-MAX_NUM_FORMS": "1000",
        },
    )
    assert response.status_code == 302
    app = ClientApp.objects.get(name="Kiosk")
    assert app.allowed_origins == ["https://kiosk.alpha.test", "http://localhost:3000"]
    assert list(app.allowed_profiles.all()) == [alpha.profile]

    created = client.post(app_url(app, "keys/new/"), {"label": "  kiosk backend "})

    key = ClientKey.objects.get(client_app=app)
    assert created.status_code == 302
    assert created["Location"] == app_url(app, f"keys/{key.pk}/created/")
    shown = client.get(created["Location"])
    raw = shown_key(shown)
    assert "no-store" in shown["Cache-Control"]
    assert client_key_authenticate(raw_key=raw) == key
    assert key.label == "kiosk backend"
    assert "kiosk backend" in shown.content.decode()
    again = client.get(app_url(app, "change/")).content.decode()
    assert raw not in again  # never shown a second time
    assert f"eph_{key.prefix}_…" in again and "kiosk backend" in again


def test_reloading_the_new_key_page_shows_it_no_more_and_makes_no_key(client, two_orgs):
    alpha, _ = two_orgs
    app = alpha.client_app
    client.force_login(alpha.users[Role.ADMIN])

    created = client.post(app_url(app, "keys/new/"), {"label": "billing"})
    first = client.get(created["Location"])
    reloaded = client.get(created["Location"])

    assert shown_key(first) is not None
    assert shown_key(reloaded) is None
    page = reloaded.content.decode()
    assert reloaded.status_code == 200 and "has already been shown" in page
    assert "no-store" in reloaded["Cache-Control"]
    assert key_count(app) == 2  # the world's key and this one: a reload made none
    assert ClientKey.objects.filter(client_app=app, label="billing").count() == 1


def test_the_raw_key_waits_only_encrypted_and_nowhere_else(client, two_orgs, caplog):
    """Between the POST and the GET it sits in the session, encrypted; never in the redirect's
    URL, a log line or the audit row."""
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.ADMIN])

    created = client.post(app_url(alpha.client_app, "keys/new/"), {"label": "ci"})
    session_rows = "".join(Session.objects.values_list("session_data", flat=True))
    held = client.session[shown_once.SESSION_KEY]
    raw = shown_key(client.get(created["Location"]))
    secret = raw.split("_")[2]

    assert secret not in created["Location"] and secret not in session_rows
    assert all(secret not in str(entry) for entry in held.values())
    assert secret not in caplog.text
    assert all(
        secret not in str(change.after)
        for change in PolicyChange.objects.filter(object_type="clients.clientkey")
    )
    assert shown_once.SESSION_KEY not in client.session  # gone once shown


def test_a_key_nobody_came_for_is_not_shown_later(client, two_orgs, monkeypatch):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.ADMIN])
    created = client.post(app_url(alpha.client_app, "keys/new/"), {"label": "later"})

    made_at = time.time()
    monkeypatch.setattr(shown_once.time, "time", lambda: made_at + shown_once.HELD_FOR_SECONDS)

    assert shown_key(client.get(created["Location"])) is None


def test_a_key_needs_a_label(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.ADMIN])

    refused = client.post(app_url(alpha.client_app, "keys/new/"), {"label": "  "}, follow=True)

    assert key_count(alpha.client_app) == 1
    assert "No key was made: This field is required." in refused.content.decode()


def test_key_buttons_point_at_forms_outside_the_change_form(client, two_orgs):
    """A <form> inside another is dropped by the browser's parser, leaving the key buttons
    pointing at nothing (found by the browser journeys): the key forms follow the main one."""
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.ADMIN])

    page = client.get(app_url(alpha.client_app, "change/")).content.decode()

    main_form_end = page.index("</form>", page.index('id="clientapp_form"'))
    for form_id in ("key-create-form", f"revoke-{alpha.client_key.pk}"):
        assert f'form="{form_id}"' in page
        assert page.index(f'<form id="{form_id}"') > main_form_end, form_id


def test_rotate_then_revoke_from_the_app_page(client, two_orgs):
    alpha, _ = two_orgs
    app, old_key, old_raw = alpha.client_app, alpha.client_key, alpha.raw_client_key
    client.force_login(alpha.users[Role.ADMIN])

    form = client.get(app_url(app, f"keys/{old_key.pk}/rotate/"))
    rotated = client.post(
        app_url(app, f"keys/{old_key.pk}/rotate/"), {"grace_seconds": "86400", "label": "v2"}
    )

    assert form.status_code == 200
    assert rotated.status_code == 302
    shown = client.get(rotated["Location"])
    new_raw = shown_key(shown)
    assert "Rotated client key" in shown.content.decode()
    assert f"replacing <code>eph_{old_key.prefix}_…" in shown.content.decode()
    assert shown_key(client.get(rotated["Location"])) is None  # a reload: no key, no rotation
    assert key_count(app) == 2
    assert client_key_authenticate(raw_key=old_raw) == old_key  # still inside its grace
    assert client_key_authenticate(raw_key=new_raw) is not None
    new_key = client_key_authenticate(raw_key=new_raw)
    assert new_key.label == "v2"

    revoked = client.post(app_url(app, f"keys/{new_key.pk}/revoke/"))

    assert revoked.status_code == 302
    assert client_key_authenticate(raw_key=new_raw) is None
    actions = list(
        PolicyChange.objects.filter(object_type="clients.clientkey")
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions[-3:] == ["create", "update", "update"]  # new key, old key's deadline, revoke


def test_stop_now_rotation_ends_the_old_key_at_once(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.ADMIN])

    client.post(
        app_url(alpha.client_app, f"keys/{alpha.client_key.pk}/rotate/"), {"grace_seconds": "0"}
    )

    assert client_key_authenticate(raw_key=alpha.raw_client_key) is None
    new_key = ClientKey.objects.filter(client_app=alpha.client_app).first()
    assert new_key.label == alpha.client_key.label  # no label given: the old key's


def test_auditors_cannot_make_rotate_or_revoke_keys(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.AUDITOR])
    app, key = alpha.client_app, alpha.client_key

    assert client.post(app_url(app, "keys/new/"), {"label": "x"}).status_code == 403
    assert client.get(app_url(app, f"keys/{key.pk}/created/")).status_code == 403
    assert (
        client.post(app_url(app, f"keys/{key.pk}/rotate/"), {"grace_seconds": "0"}).status_code
        == 403
    )
    assert client.post(app_url(app, f"keys/{key.pk}/revoke/")).status_code == 403
    assert "create-key" not in client.get(app_url(app, "change/")).content.decode()
    assert ClientKey.objects.filter(client_app=app).count() == 1
    assert client_key_authenticate(raw_key=alpha.raw_client_key) == key


def test_another_orgs_app_and_keys_are_not_found(client, two_orgs):
    alpha, bravo = two_orgs
    client.force_login(alpha.users[Role.OWNER])
    session = client.session
    shown_once.hold(session, bravo.client_key.pk, "eph_held_for_a_key_of_bravo")
    session.save()

    responses = [
        client.post(app_url(bravo.client_app, "keys/new/"), {"label": "x"}),
        client.get(app_url(bravo.client_app, f"keys/{bravo.client_key.pk}/created/")),
        # Alpha's own app with Bravo's key id, even with Bravo's key held in this session
        client.get(app_url(alpha.client_app, f"keys/{bravo.client_key.pk}/created/")),
        client.get(app_url(bravo.client_app, f"keys/{bravo.client_key.pk}/rotate/")),
        client.post(app_url(bravo.client_app, f"keys/{bravo.client_key.pk}/revoke/")),
        # Alpha's own app with Bravo's key id
        client.post(app_url(alpha.client_app, f"keys/{bravo.client_key.pk}/revoke/")),
    ]

    assert [r.status_code for r in responses] == [404] * 6
    assert client_key_authenticate(raw_key=bravo.raw_client_key) == bravo.client_key
    assert ClientKey.objects.filter(client_app=bravo.client_app).count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
@pytest.mark.usefixtures("sandbox")
async def test_after_a_token_the_app_page_shows_its_use(two_orgs, clock):
    """What an admin sees once a backend has used a key: when, how many, and the quota."""
    alpha, _ = two_orgs
    answer = await AsyncClient().post(
        "/api/v1/tokens",
        json.dumps({"profile": "alpha-voice", "end_user": "u1"}),
        content_type="application/json",
        headers=bearer(alpha.raw_client_key),
    )
    assert answer.status_code == 201
    await key_use_writes_settled()
    admin = AsyncClient()
    await admin.aforce_login(alpha.users[Role.ADMIN])

    page = (await admin.get(app_url(alpha.client_app, "change/"))).content.decode()
    listing = (await admin.get("/admin/clients/clientapp/")).content.decode()

    row = re.search(rf"<tr data-key-id='{alpha.client_key.pk}'>(.*?)</tr>", page).group(1)

    def cell(name: str) -> str:
        return re.search(rf"<td class='{name}'[^>]*>(.*?)</td>", row).group(1)

    assert cell("key-last-used") == clock.now.strftime("%Y-%m-%d %H:%M")
    assert (cell("key-today"), cell("key-week")) == ("1", "1")
    assert "1 today, 1 in the last 7 days" in page
    assert "1 of 60 this minute" in page  # the app's quota, read from the quota engine
    assert '<td class="field-issued_today">1</td>' in listing
