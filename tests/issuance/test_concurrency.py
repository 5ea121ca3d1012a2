"""Exact quotas under real concurrency: the portal under uvicorn, many clients at once.

Runs on whatever the environment configures: SQLite + the database engine by default,
PostgreSQL + Redis in CI's second pass.
"""

import asyncio
from collections import Counter

import httpx
import pytest

from apps.audit.models import TokenGrant
from apps.issuance.models import QuotaCounter
from apps.issuance.quotas import quota_engine
from apps.issuance.sandbox import Faults
from apps.policies import services as policy_services
from apps.policies.models import Quota
from tests.conftest import well_inside_window
from tests.live import serve_portal

pytestmark = pytest.mark.django_db(transaction=True)

REQUESTS, LIMIT = 200, 50


@pytest.fixture
def portal_url(sandbox):
    with serve_portal() as url:
        yield url


def burst(url: str, raw_key: str, count: int) -> Counter:
    async def run() -> Counter:
        limits = httpx.Limits(max_connections=count)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            responses = await asyncio.gather(
                *[
                    client.post(
                        "/api/v1/tokens",
                        json={"profile": "alpha-voice"},
                        headers={"Authorization": f"Bearer {raw_key}"},
                    )
                    for _ in range(count)
                ]
            )
        return Counter(response.status_code for response in responses)

    return asyncio.run(run())


def counted(organization, quota) -> int:
    """What the engine holds for the quota's current window."""
    if hasattr(quota_engine(), "client"):
        keys = quota_engine().client.keys(f"q:{organization.pk}:{quota.pk}:*")
        return sum(int(quota_engine().client.get(key)) for key in keys)
    return sum(
        QuotaCounter.objects.filter(key__startswith=f"q:{organization.pk}:{quota.pk}:").values_list(
            "count", flat=True
        )
    )


@pytest.fixture
def alpha_with_limit(two_orgs, settings):
    alpha, _ = two_orgs
    quota = policy_services.quota_create(
        organization=alpha.organization,
        actor=None,
        scope=Quota.Scope.ORG,
        window=Quota.Window.DAY,
        limit=LIMIT,
    )
    well_inside_window(86400, room=120)  # a burst across midnight would count in two days
    return alpha, quota


def test_exactly_the_limit_is_issued_under_concurrency(portal_url, alpha_with_limit):
    alpha, quota = alpha_with_limit

    statuses = burst(portal_url, alpha.raw_client_key, REQUESTS)

    assert statuses == Counter({201: LIMIT, 429: REQUESTS - LIMIT})
    grants = Counter(
        TokenGrant.objects.filter(organization=alpha.organization).values_list("outcome", flat=True)
    )
    assert grants == Counter({"issued": LIMIT, "denied_quota": REQUESTS - LIMIT})
    assert counted(alpha.organization, quota) == LIMIT


def test_refunds_stay_exact_when_google_fails_half_the_time(portal_url, alpha_with_limit, sandbox):
    alpha, quota = alpha_with_limit
    sandbox.state.faults = Faults(status=500, fail_every=2)

    statuses = burst(portal_url, alpha.raw_client_key, REQUESTS)

    grants = Counter(
        TokenGrant.objects.filter(organization=alpha.organization).values_list("outcome", flat=True)
    )
    assert sum(statuses.values()) == REQUESTS == sum(grants.values())
    assert statuses[201] == grants["issued"] <= LIMIT
    assert statuses[502] == grants["upstream_error"]
    assert statuses[429] == grants["denied_quota"]
    assert counted(alpha.organization, quota) == grants["issued"]  # every failure refunded
