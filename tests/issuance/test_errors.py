"""Every error code of the contract, triggered for real, and each attempt audited."""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from apps.audit.models import TokenGrant
from apps.clients import services as client_services
from apps.issuance.sandbox import Faults
from apps.policies import services as policy_services
from apps.policies.models import Quota
from tests.issuance.conftest import (
    bearer,
    one_token_per_end_user_per_hour,
    until_google_is_asked,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def post(api, raw_key, body, content_type="application/json"):
    payload = body if isinstance(body, str | bytes) else json.dumps(body)
    return await api.post(
        "/api/v1/tokens", payload, content_type=content_type, headers=bearer(raw_key)
    )


def error_of(response) -> dict:
    return response.json()["error"]


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        (Faults(status=500), 502, "upstream_error"),
        (Faults(status=502), 502, "upstream_error"),
        (Faults(status=504), 502, "upstream_error"),
        (Faults(status=400), 502, "upstream_error"),
        (Faults(status=429), 503, "upstream_unavailable"),
        (Faults(status=503), 503, "upstream_unavailable"),
        (Faults(body="garbage"), 502, "upstream_error"),
        (Faults(body="empty"), 502, "upstream_error"),
        (Faults(delay_ms=3000), 504, "upstream_timeout"),
    ],
    ids=["500", "502", "504", "400", "429", "503", "garbage", "empty", "timeout"],
)
async def test_upstream_faults_map_to_the_contract_and_refund(
    api, sandbox, two_orgs, settings, fault, status, code
):
    alpha, _ = two_orgs
    settings.GEMINI_TIMEOUT_MS = 500
    sandbox.state.faults = fault

    response = await post(api, alpha.raw_client_key, {"profile": "alpha-voice"})

    assert response.status_code == status
    assert error_of(response)["code"] == code
    if code == "upstream_unavailable":
        assert response["Retry-After"] == "5"
    grant = await TokenGrant.objects.aget(organization=alpha.organization)
    assert (grant.outcome, grant.error_code) == (TokenGrant.Outcome.UPSTREAM_ERROR, code)
    assert grant.token_fingerprint == ""
    # the failed attempt keeps exactly what Google got, which it may have minted from
    (received,) = sandbox.state.received
    assert grant.request_body == received["body"]
    assert grant.request_body["bidiGenerateContentSetup"]["model"].endswith("flash-live-001")
    # the reservation went back: the same request succeeds once Google is well again
    sandbox.state.faults = Faults()
    assert (await post(api, alpha.raw_client_key, {"profile": "alpha-voice"})).status_code == 201


@pytest.mark.parametrize(
    ("body", "content_type", "field_or_message"),
    [
        ({"profile": "alpha-voice", "colour": "red"}, "application/json", "colour"),
        ({"profile": 7}, "application/json", "profile"),
        ({"profile": "alpha-voice", "uses": "1"}, "application/json", "uses"),
        ({}, "application/json", "profile"),
        ("{not json", "application/json", "not valid JSON"),
        ({"profile": "alpha-voice"}, "text/plain", "Content-Type"),
        ({"profile": "alpha-voice", "end_user": "x" * 20000}, "application/json", "bytes"),
    ],
    ids=["unknown-field", "wrong-type", "string-number", "missing", "bad-json", "text", "big"],
)
async def test_bad_requests_are_400_audited_and_never_reach_google(
    api, sandbox, two_orgs, body, content_type, field_or_message
):
    alpha, _ = two_orgs

    response = await post(api, alpha.raw_client_key, body, content_type)

    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_request"
    assert field_or_message in error.get("field", "") + error["message"]
    assert sandbox.state.received == type(sandbox.state.received)()
    grant = await TokenGrant.objects.aget(organization=alpha.organization)
    assert (grant.outcome, grant.error_code) == ("denied_policy", "invalid_request")


async def test_unknown_and_foreign_profiles_look_the_same(api, sandbox, two_orgs):
    alpha, bravo = two_orgs

    unknown = await post(api, alpha.raw_client_key, {"profile": "nope"})
    foreign = await post(api, alpha.raw_client_key, {"profile": bravo.profile.slug})

    assert unknown.status_code == foreign.status_code == 404
    assert error_of(unknown)["code"] == error_of(foreign)["code"] == "profile_not_found"
    assert "Bravo" not in foreign.content.decode()
    assert await TokenGrant.objects.filter(organization=bravo.organization).acount() == 0
    assert (
        await TokenGrant.objects.filter(
            organization=alpha.organization, error_code="profile_not_found"
        ).acount()
        == 2
    )


async def test_a_profile_the_app_may_not_use_is_forbidden(api, sandbox, two_orgs):
    alpha, _ = two_orgs
    await sync_to_async(policy_services.profile_create)(
        organization=alpha.organization,
        actor=None,
        slug="internal",
        name="Internal",
        model="gemini-2.0-flash-live-001",
    )

    response = await post(api, alpha.raw_client_key, {"profile": "internal"})

    assert response.status_code == 403
    assert error_of(response)["code"] == "forbidden"


async def test_revoked_and_expired_keys_are_unauthenticated(api, sandbox, two_orgs):
    alpha, bravo = two_orgs
    await sync_to_async(client_services.client_key_revoke)(
        organization=alpha.organization, key=alpha.client_key, actor=None
    )
    await sync_to_async(client_services.client_key_rotate)(
        organization=bravo.organization,
        key=bravo.client_key,
        actor=None,
        grace_until=timezone.now(),
    )

    revoked = await post(api, alpha.raw_client_key, {"profile": "alpha-voice"})
    past_grace = await post(api, bravo.raw_client_key, {"profile": "bravo-voice"})
    missing = await api.post("/api/v1/tokens", "{}", content_type="application/json")

    for response in (revoked, past_grace, missing):
        assert response.status_code == 401
        assert error_of(response)["code"] == "unauthenticated"
    assert sandbox.state.received == type(sandbox.state.received)()


@pytest.mark.parametrize("disabled", ["organization", "client_app", "profile"])
async def test_disabled_org_app_or_profile_is_forbidden_and_audited(
    api, sandbox, two_orgs, disabled
):
    alpha, _ = two_orgs
    target = getattr(alpha, disabled)
    target.is_active = False
    await target.asave()

    response = await post(api, alpha.raw_client_key, {"profile": "alpha-voice"})

    assert response.status_code == 403
    assert error_of(response)["code"] == "forbidden"
    grant = await TokenGrant.objects.aget(organization=alpha.organization)
    assert grant.outcome == TokenGrant.Outcome.DENIED_POLICY


async def test_quota_denial_names_the_limit_and_says_when_to_retry(api, sandbox, two_orgs, clock):
    alpha, _ = two_orgs
    await one_token_per_end_user_per_hour(alpha.organization)

    first = await post(api, alpha.raw_client_key, {"profile": "alpha-voice", "end_user": "eve"})
    second = await post(api, alpha.raw_client_key, {"profile": "alpha-voice", "end_user": "eve"})
    other_user = await post(
        api, alpha.raw_client_key, {"profile": "alpha-voice", "end_user": "bob"}
    )

    assert (first.status_code, second.status_code, other_user.status_code) == (201, 429, 201)
    error = error_of(second)
    assert error["code"] == "quota_exceeded"
    assert error["limit"] == "each end user quota 1 per hour"
    assert 0 < int(second["Retry-After"]) <= 3600
    assert await TokenGrant.objects.filter(outcome="denied_quota").acount() == 1


async def test_active_token_cap_counts_live_tokens(api, sandbox, two_orgs):
    alpha, _ = two_orgs
    alpha.organization.max_active_tokens = 2
    await alpha.organization.asave()

    statuses = [
        (await post(api, alpha.raw_client_key, {"profile": "alpha-voice"})).status_code
        for _ in range(3)
    ]

    assert statuses == [201, 201, 429]


async def test_redis_configured_but_down_fails_closed(api, sandbox, two_orgs, settings):
    alpha, _ = two_orgs
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there

    response = await post(api, alpha.raw_client_key, {"profile": "alpha-voice"})

    assert response.status_code == 503
    assert error_of(response)["code"] == "quota_backend_unavailable"
    grant = await TokenGrant.objects.aget(organization=alpha.organization)
    assert (grant.outcome, grant.error_code) == ("denied_quota", "quota_backend_unavailable")
    assert sandbox.state.received == type(sandbox.state.received)()


async def test_profiles_lists_what_the_app_may_use(api, two_orgs):
    alpha, _ = two_orgs

    response = await api.get("/api/v1/profiles", headers=bearer(alpha.raw_client_key))

    assert response.status_code == 200
    assert [p["slug"] for p in response.json()] == ["alpha-voice"]


async def test_a_key_from_an_unlisted_origin_is_refused(api, sandbox, two_orgs):
    alpha, _ = two_orgs

    allowed = await api.post(
        "/api/v1/tokens",
        json.dumps({"profile": "alpha-voice"}),
        content_type="application/json",
        headers={**bearer(alpha.raw_client_key), "Origin": "https://alpha.test"},
    )
    refused = await api.post(
        "/api/v1/tokens",
        json.dumps({"profile": "alpha-voice"}),
        content_type="application/json",
        headers={**bearer(alpha.raw_client_key), "Origin": "https://evil.test"},
    )

    assert allowed.status_code == 201
    assert allowed["Access-Control-Allow-Origin"] == "https://alpha.test"
    assert refused.status_code == 403
    assert "Access-Control-Allow-Origin" not in refused


async def test_a_client_that_hangs_up_leaves_no_pending_row_or_reservation(sandbox, two_orgs):
    from apps.issuance.models import ActiveTokenSlot
    from apps.issuance.services import Caller, TokenRequest, token_issue

    alpha, _ = two_orgs
    sandbox.state.faults = Faults(delay_ms=1500)
    caller = Caller(organization=alpha.organization, client_app=alpha.client_app)
    task = asyncio.ensure_future(
        token_issue(caller=caller, request=TokenRequest(profile="alpha-voice"))
    )
    await until_google_is_asked(sandbox)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    grant = await TokenGrant.objects.aget(organization=alpha.organization)
    assert grant.outcome == TokenGrant.Outcome.ABANDONED
    assert grant.quota_reservation is None
    assert await ActiveTokenSlot.objects.acount() == 0
    (received,) = sandbox.state.received  # sent before the hang-up: kept on the grant
    assert grant.request_body == received["body"]


async def test_an_unreadable_org_key_is_a_clear_audited_error(api, sandbox, two_orgs, settings):
    from cryptography.fernet import Fernet

    alpha, _ = two_orgs
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]  # the old key dropped

    response = await post(api, alpha.raw_client_key, {"profile": "alpha-voice"})

    assert response.status_code == 502
    assert "cannot be decrypted" in error_of(response)["message"]
    grant = await TokenGrant.objects.aget(organization=alpha.organization)
    assert grant.outcome == TokenGrant.Outcome.DENIED_POLICY


async def test_long_end_user_ids_work_with_end_user_quotas(api, sandbox, two_orgs):
    alpha, _ = two_orgs
    await sync_to_async(policy_services.quota_create)(
        organization=alpha.organization,
        actor=None,
        scope=Quota.Scope.END_USER,
        window=Quota.Window.MINUTE,
        limit=5,
    )

    response = await post(
        api, alpha.raw_client_key, {"profile": "alpha-voice", "end_user": "u" * 200}
    )

    assert response.status_code == 201


async def test_profiles_refuses_a_disabled_app(api, two_orgs):
    alpha, _ = two_orgs
    alpha.client_app.is_active = False
    await alpha.client_app.asave()

    response = await api.get("/api/v1/profiles", headers=bearer(alpha.raw_client_key))

    assert response.status_code == 403
