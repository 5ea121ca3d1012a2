"""Each quota shows its current window's use against its limit, read from the active quota
engine (SQLite: the database engine; PostgreSQL with REDIS_URL: Redis)."""

from datetime import timedelta
from uuid import uuid4

import pytest
from django.conf import settings

from apps.issuance import quotas
from apps.issuance.quotas import active_cap_for, applicable_limits, quota_engine
from apps.policies import services as policy_services
from apps.tenants.models import Role

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def clean_redis():
    yield
    if settings.REDIS_URL:
        quota_engine().client.flushdb()


def take(quota, now, times: int) -> None:
    """``times`` reservations against ``quota``, as issuance makes them."""
    organization = quota.organization
    for _ in range(times):
        limits = applicable_limits(
            organization=organization,
            client_app_id=quota.client_app_id,
            profile_id=quota.profile_id or 0,
            end_user="someone",
            quotas=[quota],
            now=now,
        )
        expires = now + timedelta(days=365)
        quota_engine().reserve(limits, active_cap_for(organization), str(uuid4()), expires, now)


@pytest.fixture
def profile_quota(two_orgs):
    alpha = two_orgs[0]
    return policy_services.quota_create(
        organization=alpha.organization,
        actor=None,
        scope="profile",
        profile=alpha.profile,
        window="hour",
        limit=50,
    )


def test_the_quota_list_shows_each_quotas_use_read_at_once(
    client, two_orgs, profile_quota, clock, monkeypatch
):
    alpha, bravo = two_orgs
    take(alpha.quota, clock.now, 2)
    take(profile_quota, clock.now, 37)
    take(bravo.quota, clock.now, 5)
    reads = []
    engine = quota_engine()
    counts = engine.counts
    monkeypatch.setattr(quotas, "quota_engine", lambda: engine)
    monkeypatch.setattr(engine, "counts", lambda keys: reads.append(keys) or counts(keys))
    client.force_login(alpha.users[Role.AUDITOR])

    page = client.get("/admin/policies/quota/").content.decode()

    assert "2 of 60 this minute" in page
    assert "37 of 50 this hour" in page
    assert "5 of 60" not in page  # Bravo's quota is neither listed nor read
    assert len(reads) == 1 and len(reads[0]) == 2


def test_a_new_window_starts_at_zero(client, two_orgs, clock):
    alpha, _ = two_orgs
    take(alpha.quota, clock.now, 3)
    client.force_login(alpha.users[Role.ADMIN])
    change_url = f"/admin/policies/quota/{alpha.quota.pk}/change/"

    assert "3 of 60 this minute" in client.get(change_url).content.decode()
    clock.advance(minutes=1)
    assert "0 of 60 this minute" in client.get(change_url).content.decode()


def test_the_profile_page_shows_the_use_of_its_quotas(client, two_orgs, profile_quota, clock):
    alpha, _ = two_orgs
    take(profile_quota, clock.now, 4)
    client.force_login(alpha.users[Role.ADMIN])

    page = client.get(f"/admin/policies/liveconstraintprofile/{alpha.profile.pk}/change/")

    assert "4 of 50 this hour" in page.content.decode()


def test_the_quota_form_still_saves_the_limit(client, two_orgs, clock):
    """The use is shown beside the form's fields, not submitted with them."""
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.ADMIN])
    quota = alpha.quota

    response = client.post(
        f"/admin/policies/quota/{quota.pk}/change/",
        {"scope": "client_app", "client_app": quota.client_app_id, "window": "minute", "limit": 80},
    )

    assert response.status_code == 302
    quota.refresh_from_db()
    assert quota.limit == 80
