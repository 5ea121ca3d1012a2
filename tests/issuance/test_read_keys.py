"""A key made to read usage cannot issue (docs/adr/0019-read-only-usage-keys.md)."""

import json
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from apps.audit.models import TokenGrant
from apps.clients import services as client_services
from apps.clients.forms import KeyCreateForm
from apps.clients.models import ClientKey
from tests.issuance.conftest import bearer

READ_USAGE = ClientKey.Scope.READ_USAGE


def read_key(world) -> tuple[ClientKey, str]:
    return client_services.client_key_create(
        organization=world.organization,
        client_app=world.client_app,
        actor=world.owner,
        label="finance",
        scope=READ_USAGE,
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_read_key_is_refused_a_token_and_the_refusal_is_recorded(
    api, two_orgs, issuance_path
):
    alpha, _ = two_orgs
    key, raw = await sync_to_async(read_key)(alpha)
    body = json.dumps({"profile": "alpha-voice", "end_user": "finance-bot"})

    refused = await api.post(
        "/api/v1/tokens", body, content_type="application/json", headers=bearer(raw)
    )
    issued = await api.post(
        "/api/v1/tokens",
        body,
        content_type="application/json",
        headers=bearer(alpha.raw_client_key),
    )
    listed = await api.get("/api/v1/profiles", headers=bearer(raw))

    assert refused.status_code == 403, refused.content
    assert refused.json()["error"]["code"] == "forbidden"
    assert "reads usage only" in refused.json()["error"]["message"]
    assert issued.status_code == 201, issued.content  # the issue key still issues
    grant = await TokenGrant.objects.aget(client_key_prefix=key.prefix)
    assert grant.outcome == TokenGrant.Outcome.DENIED_POLICY
    assert grant.error_code == "forbidden"
    assert grant.client_app_id == alpha.client_app.pk
    assert grant.token_fingerprint == ""
    assert listed.status_code == 403
    assert listed.json()["error"]["code"] == "forbidden"


@pytest.mark.django_db
def test_a_rotated_read_key_is_replaced_by_a_read_key(two_orgs):
    alpha, _ = two_orgs
    key, _ = read_key(alpha)

    new_key, _ = client_services.client_key_rotate(
        organization=alpha.organization,
        key=key,
        actor=None,
        grace_until=timezone.now() + timedelta(hours=1),
    )

    assert new_key.scope == READ_USAGE
    assert alpha.client_key.scope == ClientKey.Scope.ISSUE  # keys made before scopes issue


def test_the_create_form_makes_issue_keys_unless_asked():
    plain = KeyCreateForm({"label": "web"})
    reader = KeyCreateForm({"label": "finance", "scope": "read_usage"})
    bogus = KeyCreateForm({"label": "x", "scope": "everything"})

    assert plain.is_valid() and plain.cleaned_data["scope"] == "issue"
    assert reader.is_valid() and reader.cleaned_data["scope"] == "read_usage"
    assert not bogus.is_valid()


@pytest.mark.django_db
def test_the_app_page_makes_a_read_key(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.owner)
    app_url = f"/admin/clients/clientapp/{alpha.client_app.pk}/"

    page = client.get(f"{app_url}change/")
    made = client.post(f"{app_url}keys/new/", {"label": "finance", "scope": "read_usage"})
    shown = client.get(made["Location"])

    assert b'name="scope"' in page.content
    key = ClientKey.objects.get(client_app=alpha.client_app, label="finance")
    assert key.scope == READ_USAGE
    assert b"GET /api/v1/usage" in shown.content
    assert b"read usage" in client.get(f"{app_url}change/").content
