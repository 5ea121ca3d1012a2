"""POST /api/v1/tokens through the real SDK against the sandbox upstream."""

import hashlib
import hmac
import json

import pytest
from django.conf import settings

from apps.audit.models import TokenGrant
from apps.policies.selectors import profile_wire_preview
from tests.issuance.conftest import bearer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def issue(api, raw_key, **body):
    return await api.post(
        "/api/v1/tokens", json.dumps(body), content_type="application/json", headers=bearer(raw_key)
    )


async def test_a_client_app_gets_a_token_and_the_grant_records_it(api, sandbox, two_orgs):
    alpha, _ = two_orgs

    response = await issue(api, alpha.raw_client_key, profile="alpha-voice", end_user="u-1")

    assert response.status_code == 201, response.content
    data = response.json()
    assert data["token"].startswith("auth_tokens/sandbox-")
    assert data["profile"] == "alpha-voice"
    assert data["model"] == "gemini-2.0-flash-live-001"
    assert data["uses"] == 1
    assert data["sandbox"] is True
    assert "no-store" in response["Cache-Control"]
    assert response["X-Request-ID"]
    grant = await TokenGrant.objects.aget(public_id=data["grant_id"])
    assert grant.outcome == TokenGrant.Outcome.ISSUED
    assert grant.lifecycle == TokenGrant.Lifecycle.ACTIVE
    assert grant.end_user == "u-1"
    expected = hmac.new(
        settings.AUDIT_HMAC_KEY.encode(), data["token"].encode(), hashlib.sha256
    ).hexdigest()
    assert grant.token_fingerprint == expected
    (received,) = sandbox.state.received
    assert received["body"] == grant.request_body
    assert received["api_key_last_four"] == "0000"  # alpha's own Gemini key
    assert data["token"] not in json.dumps(grant.request_body)


async def test_the_body_google_gets_matches_the_admin_preview(api, sandbox, two_orgs):
    alpha, _ = two_orgs

    response = await issue(api, alpha.raw_client_key, profile="alpha-voice")

    (received,) = sandbox.state.received
    preview = profile_wire_preview(profile=alpha.profile)
    body = received["body"]
    assert body["bidiGenerateContentSetup"] == preview.body["bidiGenerateContentSetup"]
    assert "fieldMask" not in body  # whole-setup lock
    assert response.json()["locked_fields"] == preview.locked_fields


async def test_overrides_may_only_ask_for_less(api, sandbox, two_orgs):
    alpha, _ = two_orgs

    shorter = await issue(
        api, alpha.raw_client_key, profile="alpha-voice", expire_seconds=300, new_session_seconds=30
    )
    longer = await issue(api, alpha.raw_client_key, profile="alpha-voice", expire_seconds=999999)

    assert shorter.status_code == 201
    body = sandbox.state.received[0]["body"]
    assert body["uses"] == 1
    assert longer.status_code == 400
    assert longer.json()["error"]["code"] == "invalid_request"
    assert longer.json()["error"]["field"] == "expire_seconds"
    assert len(sandbox.state.received) == 1  # the refused one never reached Google
