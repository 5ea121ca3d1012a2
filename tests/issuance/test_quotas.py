"""Both quota engines, on the same contract: all or none, the tightest limit named."""

import json
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings

from apps.issuance import quotas
from apps.issuance.quotas import (
    ActiveCap,
    DatabaseQuotaEngine,
    Limit,
    QuotaBackendUnavailable,
    QuotaDenied,
    RedisQuotaEngine,
    active_cap_for,
    applicable_limits,
    quota_usage,
    quota_usage_texts,
    redis_reservation,
)
from apps.policies import services as policy_services
from tests.issuance.conftest import bearer

# Half a minute into a window, and always ahead: Redis expires its keys on the real clock.
NOW = datetime(datetime.now(UTC).year + 1, 1, 1, 12, 0, 30, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)


def engines():
    yield pytest.param("db", id="database")
    yield pytest.param(
        "redis",
        id="redis",
        marks=pytest.mark.skipif(not settings.REDIS_URL, reason="REDIS_URL is not set"),
    )


@pytest.fixture(params=list(engines()))
def engine(request, db):
    if request.param == "db":
        yield DatabaseQuotaEngine()
        return
    engine = RedisQuotaEngine(settings.REDIS_URL)
    yield engine
    engine.client.flushdb()


@pytest.fixture
def org(two_orgs):
    return two_orgs[0].organization


def limits(tag: str, minute: int = 2, hour: int = 5) -> list[Limit]:
    return [
        Limit(f"t:{tag}:minute", "minute quota", minute, 60, NOW.timestamp() + 30),
        Limit(f"t:{tag}:hour", "hour quota", hour, 3600, NOW.timestamp() + 1800),
    ]


def test_all_or_none_and_the_longest_wait_is_named(engine, org):
    tag = uuid4().hex
    cap = ActiveCap(f"t:{tag}:active", org.pk, 100)
    for _ in range(2):
        engine.reserve(limits(tag), cap, str(uuid4()), LATER, NOW)

    with pytest.raises(QuotaDenied) as denied:
        engine.reserve(limits(tag, hour=2), cap, str(uuid4()), LATER, NOW)

    # both windows are full; the hour keeps the caller waiting longest, so it is named
    assert (denied.value.name, denied.value.retry_after) == ("hour quota", 1800)
    with pytest.raises(QuotaDenied) as denied:
        engine.reserve(limits(tag), cap, str(uuid4()), LATER, NOW)
    assert denied.value.name == "minute quota"  # the hour window was not charged above


def test_refund_gives_back_exactly_what_was_taken_and_only_once(engine, org):
    tag = uuid4().hex
    cap = ActiveCap(f"t:{tag}:active", org.pk, 100)
    first = engine.reserve(limits(tag), cap, str(uuid4()), LATER, NOW)
    engine.reserve(limits(tag), cap, str(uuid4()), LATER, NOW)

    engine.refund(first)
    engine.refund(first)  # a repeated refund (a retry, a reaper) gives nothing more back

    engine.reserve(limits(tag), cap, str(uuid4()), LATER, NOW)
    with pytest.raises(QuotaDenied):
        engine.reserve(limits(tag), cap, str(uuid4()), LATER, NOW)  # 3 would be over 2


def test_refunding_a_reservation_never_taken_gives_nothing_back(engine, org):
    """Issuance on the event loop writes the grant (naming its reservation) while the script
    runs: a crash in between leaves reap_pending a reservation that may never have been made."""
    tag = uuid4().hex
    cap = ActiveCap(f"t:{tag}:active", org.pk, 100)
    engine.reserve(limits(tag), cap, str(uuid4()), LATER, NOW)
    taken = engine.reserve(limits(tag), cap, str(uuid4()), LATER, NOW)
    never_taken = redis_reservation(limits(tag), cap, str(uuid4()))

    engine.refund(never_taken)

    with pytest.raises(QuotaDenied):
        engine.reserve(limits(tag), cap, str(uuid4()), LATER, NOW)  # still 2 of 2 taken
    engine.refund(taken)
    engine.reserve(limits(tag), cap, str(uuid4()), LATER, NOW)


def test_the_active_cap_frees_as_tokens_expire(engine, org):
    tag = uuid4().hex
    cap = ActiveCap(f"t:{tag}:active", org.pk, 1)
    engine.reserve([], cap, str(uuid4()), NOW + timedelta(seconds=10), NOW)

    with pytest.raises(QuotaDenied) as denied:
        engine.reserve([], cap, str(uuid4()), LATER, NOW)
    assert denied.value.name == "plan: max 1 active tokens"

    engine.reserve([], cap, str(uuid4()), LATER, NOW + timedelta(seconds=11))


def test_redis_down_is_reported_not_guessed():
    engine = RedisQuotaEngine("redis://127.0.0.1:1/0")

    with pytest.raises(QuotaBackendUnavailable):
        engine.reserve([], ActiveCap("x", 1, 1), str(uuid4()), LATER, NOW)


# --- what the admin reads of a quota: the engine's own counter, untouched --------------------


@pytest.fixture
def app_quota(two_orgs):
    """Alpha's quota of 60 a minute on its app (made by the two_orgs world)."""
    return two_orgs[0].quota


def reserve_for(engine, quota, now, end_user="someone"):
    organization = quota.organization
    taken = applicable_limits(
        organization=organization,
        client_app_id=quota.client_app_id,
        profile_id=0,
        end_user=end_user,
        quotas=[quota],
        now=now,
    )
    return engine.reserve(taken, active_cap_for(organization), str(uuid4()), LATER, now)


def test_the_usage_read_is_the_engines_own_count_in_the_current_window(
    engine, app_quota, monkeypatch
):
    monkeypatch.setattr(quotas, "quota_engine", lambda: engine)
    assert quota_usage(app_quota, now=NOW) == 0
    taken = [reserve_for(engine, app_quota, NOW) for _ in range(3)]

    assert quota_usage(app_quota, now=NOW) == 3
    assert quota_usage(app_quota, now=NOW) == 3  # reading takes nothing
    assert quota_usage(app_quota, now=NOW + timedelta(seconds=29)) == 3  # same minute
    assert quota_usage(app_quota, now=NOW + timedelta(seconds=30)) == 0  # the next one
    engine.refund(taken[0])
    assert quota_usage(app_quota, now=NOW) == 2
    assert quota_usage_texts([app_quota], now=NOW) == {app_quota.pk: "2 of 60 this minute"}


def test_a_per_end_user_quota_has_no_one_total(engine, two_orgs, monkeypatch):
    monkeypatch.setattr(quotas, "quota_engine", lambda: engine)
    alpha = two_orgs[0]
    per_user = policy_services.quota_create(
        organization=alpha.organization, actor=None, scope="end_user", window="day", limit=5
    )
    reserve_for(engine, per_user, NOW)

    assert quota_usage(per_user, now=NOW) is None
    assert quota_usage_texts([per_user], now=NOW)[per_user.pk] == (
        "counted per end user: 5 each today (UTC)"
    )


def test_an_unreachable_engine_is_said_not_guessed(app_quota, monkeypatch):
    monkeypatch.setattr(quotas, "quota_engine", lambda: RedisQuotaEngine("redis://127.0.0.1:1/0"))

    assert quota_usage_texts([app_quota]) == {
        app_quota.pk: "unknown: the quota store is unreachable"
    }


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_tokens_issued_through_the_api_show_in_the_active_engines_usage(
    api, sandbox, two_orgs, clock
):
    """SQLite: the database engine; PostgreSQL with REDIS_URL: Redis. Whichever is active."""
    alpha, bravo = two_orgs
    for n in range(3):
        response = await api.post(
            "/api/v1/tokens",
            json.dumps({"profile": "alpha-voice", "end_user": f"u{n}"}),
            content_type="application/json",
            headers=bearer(alpha.raw_client_key),
        )
        assert response.status_code == 201

    read = sync_to_async(quota_usage)
    assert (await read(alpha.quota), await read(bravo.quota)) == (3, 0)
    clock.advance(minutes=1)
    assert await read(alpha.quota) == 0  # a new window
