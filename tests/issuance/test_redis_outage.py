"""Redis stops in the middle of a run: issuance fails closed (503, audited), then recovers."""

import json
import shutil

import pytest

from apps.audit.models import TokenGrant
from tests.issuance.conftest import bearer

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.asyncio,
    pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server is not installed"),
]


async def test_issuance_fails_closed_while_redis_is_down_and_recovers(
    api, sandbox, two_orgs, own_redis
):
    alpha, _ = two_orgs

    async def issue():
        return await api.post(
            "/api/v1/tokens",
            json.dumps({"profile": "alpha-voice"}),
            content_type="application/json",
            headers=bearer(alpha.raw_client_key),
        )

    before = await issue()
    own_redis.stop()
    during = await issue()
    own_redis.start()
    after = await issue()

    assert (before.status_code, during.status_code, after.status_code) == (201, 503, 201)
    assert during.json()["error"]["code"] == "quota_backend_unavailable"
    assert during["Retry-After"] == "5"
    outcomes = [
        outcome
        async for outcome in TokenGrant.objects.filter(organization=alpha.organization)
        .order_by("id")
        .values_list("error_code", flat=True)
    ]
    assert outcomes == ["", "quota_backend_unavailable", ""]
    assert len(sandbox.state.received) == 2  # the refused attempt never reached Google
