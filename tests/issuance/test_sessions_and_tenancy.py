"""Members issuing from the browser, the OpenAPI document, and tenancy across the API."""

import json
from datetime import UTC

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient
from django.utils import timezone

from apps.audit.models import TokenGrant
from apps.clients import services as client_services
from apps.clients.models import ClientKey
from apps.policies import services as policy_services
from apps.tenants.models import Role
from tests.factories import TokenGrantFactory
from tests.issuance.conftest import bearer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture
def member_profile(two_orgs):
    alpha, _ = two_orgs
    return policy_services.profile_update(
        organization=alpha.organization, profile=alpha.profile, actor=None, members_may_use=True
    )


async def member_client(user) -> AsyncClient:
    client = AsyncClient(enforce_csrf_checks=True)
    await client.aforce_login(user)
    await client.get("/")  # the member home page sets the csrftoken cookie
    return client


async def test_a_member_issues_with_session_and_csrf(sandbox, two_orgs, member_profile):
    alpha, _ = two_orgs
    client = await member_client(alpha.users[Role.MEMBER])
    csrf = client.cookies["csrftoken"].value

    without = await client.post(
        "/api/v1/tokens", json.dumps({"profile": "alpha-voice"}), content_type="application/json"
    )
    with_csrf = await client.post(
        "/api/v1/tokens",
        json.dumps({"profile": "alpha-voice", "end_user": "someone-else"}),
        content_type="application/json",
        headers={"X-CSRFToken": csrf},
    )

    assert without.status_code == 403
    assert without.json()["error"]["code"] == "forbidden"
    assert with_csrf.status_code == 201, with_csrf.content
    grant = await TokenGrant.objects.select_related("member").aget(outcome="issued")
    assert grant.member == alpha.users[Role.MEMBER]
    assert grant.client_app_id is None
    assert grant.end_user == f"member:{alpha.users[Role.MEMBER].pk}"  # not what was claimed


async def test_a_member_whose_session_ended_is_told_to_sign_in_again(
    sandbox, two_orgs, member_profile
):
    alpha, _ = two_orgs
    client = await member_client(alpha.users[Role.MEMBER])
    csrf = client.cookies["csrftoken"].value
    await client.alogout()  # the session ends; the browser still sends its cookies
    client.cookies["sessionid"] = "ended-session"

    response = await client.post(
        "/api/v1/tokens",
        json.dumps({"profile": "alpha-voice"}),
        content_type="application/json",
        headers={"X-CSRFToken": csrf},
    )
    keyless = await AsyncClient().post(
        "/api/v1/tokens", json.dumps({"profile": "alpha-voice"}), content_type="application/json"
    )

    assert response.status_code == 401
    assert response.json()["error"] == {
        "code": "unauthenticated",
        "message": "Your session has ended: sign in again, or send a client key.",
    }
    assert keyless.status_code == 401  # a backend without a key is still told to send one
    assert "Authorization: Bearer" in keyless.json()["error"]["message"]


async def test_members_may_not_use_a_profile_closed_to_them(sandbox, two_orgs):
    alpha, _ = two_orgs
    client = await member_client(alpha.users[Role.MEMBER])

    response = await client.post(
        "/api/v1/tokens",
        json.dumps({"profile": "alpha-voice"}),
        content_type="application/json",
        headers={"X-CSRFToken": client.cookies["csrftoken"].value},
    )

    assert response.status_code == 403
    assert response.json()["error"]["message"] == "Members may not use profile 'alpha-voice'."


async def test_a_member_cannot_reach_another_orgs_profile(sandbox, two_orgs, member_profile):
    alpha, bravo = two_orgs
    await sync_to_async(policy_services.profile_update)(
        organization=bravo.organization, profile=bravo.profile, actor=None, members_may_use=True
    )
    client = await member_client(alpha.users[Role.MEMBER])

    response = await client.post(
        "/api/v1/tokens",
        json.dumps({"profile": bravo.profile.slug}),
        content_type="application/json",
        headers={"X-CSRFToken": client.cookies["csrftoken"].value},
    )
    listed = await client.get("/api/v1/profiles")

    assert response.status_code == 404
    assert [p["slug"] for p in listed.json()] == ["alpha-voice"]


async def test_each_key_sees_only_its_own_orgs_profiles(api, two_orgs):
    alpha, bravo = two_orgs

    alpha_view = await api.get("/api/v1/profiles", headers=bearer(alpha.raw_client_key))
    bravo_view = await api.get("/api/v1/profiles", headers=bearer(bravo.raw_client_key))

    assert [p["slug"] for p in alpha_view.json()] == ["alpha-voice"]
    assert [p["slug"] for p in bravo_view.json()] == ["bravo-voice"]


async def test_openapi_describes_the_contract(api):
    response = await api.get("/api/v1/openapi.json")

    spec = response.json()
    operation = spec["paths"]["/api/v1/tokens"]["post"]
    assert set(operation["responses"]) >= {"201", "400", "401", "403", "404", "429", "502", "503"}
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["additionalProperties"] is False
    assert body["required"] == ["profile"]
    docs = await api.get("/api/v1/docs")
    assert docs.status_code == 200
    assert "/static/ninja/swagger-ui-bundle.js" in docs.content.decode()  # no CDN


async def test_each_read_key_reads_only_its_own_orgs_usage(api, two_orgs):
    """No organisation parameter exists: the key's organisation is the one reported."""
    readers = {}
    for world in two_orgs:
        await sync_to_async(TokenGrantFactory)(
            organization=world.organization, client_app=world.client_app, profile=world.profile
        )
        _, readers[world.organization.slug] = await sync_to_async(
            client_services.client_key_create
        )(
            organization=world.organization,
            client_app=world.client_app,
            actor=None,
            scope=ClientKey.Scope.READ_USAGE,
        )
    day = timezone.now().astimezone(UTC).date()
    query = f"/api/v1/usage?from={day}&to={day}"

    alpha_view = await api.get(query, headers=bearer(readers["alpha"]))
    bravo_view = await api.get(query, headers=bearer(readers["bravo"]))
    bravo_as_alpha = await api.get(f"{query}&app=Alpha%20web", headers=bearer(readers["bravo"]))

    assert [(r["app"], r["profile"]) for r in alpha_view.json()["rows"]] == [
        ("Alpha web", "alpha-voice")
    ]
    assert [(r["app"], r["profile"]) for r in bravo_view.json()["rows"]] == [
        ("Bravo web", "bravo-voice")
    ]
    assert bravo_as_alpha.status_code == 400
