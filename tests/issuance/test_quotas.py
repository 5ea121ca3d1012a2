"""Both quota engines, on the same contract: all or none, the tightest limit named."""

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from django.conf import settings

from apps.issuance.quotas import (
    ActiveCap,
    DatabaseQuotaEngine,
    Limit,
    QuotaBackendUnavailable,
    QuotaDenied,
    RedisQuotaEngine,
    redis_reservation,
)

NOW = datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC)
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
