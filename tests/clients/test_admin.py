"""Client apps and keys in the admin: a key is shown once, rotated with grace, revoked now."""

import re

import pytest

from apps.audit.models import PolicyChange
from apps.clients.models import ClientApp, ClientKey
from apps.clients.selectors import client_key_authenticate
from apps.tenants.models import Role

pytestmark = pytest.mark.django_db


def app_url(app, suffix=""):
    return f"/admin/clients/clientapp/{app.pk}/{suffix}"


def shown_key(response) -> str:
    return re.search(
        r'id="new-key" class="new-key">(eph_[A-Za-z0-9_]+)<', response.content.decode()
    ).group(1)


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

    created = client.post(app_url(app, "keys/new/"))

    raw = shown_key(created)
    assert "no-store" in created["Cache-Control"]
    assert client_key_authenticate(raw_key=raw).client_app == app
    again = client.get(app_url(app, "change/")).content.decode()
    assert raw not in again  # never shown a second time
    assert f"eph_{raw.split('_')[1]}_…" in again


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
    rotated = client.post(app_url(app, f"keys/{old_key.pk}/rotate/"), {"grace_seconds": "86400"})

    assert form.status_code == 200
    new_raw = shown_key(rotated)
    assert client_key_authenticate(raw_key=old_raw) == old_key  # still inside its grace
    assert client_key_authenticate(raw_key=new_raw) is not None
    new_key = client_key_authenticate(raw_key=new_raw)

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


def test_auditors_cannot_make_rotate_or_revoke_keys(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.AUDITOR])
    app, key = alpha.client_app, alpha.client_key

    assert client.post(app_url(app, "keys/new/")).status_code == 403
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

    responses = [
        client.post(app_url(bravo.client_app, "keys/new/")),
        client.get(app_url(bravo.client_app, f"keys/{bravo.client_key.pk}/rotate/")),
        client.post(app_url(bravo.client_app, f"keys/{bravo.client_key.pk}/revoke/")),
        # Alpha's own app with Bravo's key id
        client.post(app_url(alpha.client_app, f"keys/{bravo.client_key.pk}/revoke/")),
    ]

    assert [r.status_code for r in responses] == [404, 404, 404, 404]
    assert client_key_authenticate(raw_key=bravo.raw_client_key) == bravo.client_key
    assert ClientKey.objects.filter(client_app=bravo.client_app).count() == 1
