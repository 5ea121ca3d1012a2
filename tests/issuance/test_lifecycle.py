"""The grant lifecycle after the request: expiry at each grant's own deadlines, reaping with
the quota refunded, and the quota engine's ended windows pruned on the way."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from apps.audit.models import TokenGrant
from apps.audit.services import RunTally
from apps.issuance import lifecycle
from apps.issuance.models import QuotaCounter
from apps.issuance.quotas import active_cap_for, applicable_limits, quota_engine
from tests.conftest import TenantWorld, make_world
from tests.factories import TokenGrantFactory

pytestmark = pytest.mark.django_db

Lifecycle, Outcome = TokenGrant.Lifecycle, TokenGrant.Outcome

T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def two_orgs(db) -> tuple[TenantWorld, TenantWorld]:
    """As tests/audit's: Alpha and Bravo, each with an issued, sealed grant not yet due."""
    return make_world("Alpha", with_audit_trail=True), make_world("Bravo", with_audit_trail=True)


def run(work, now):
    tally = RunTally()
    work(tally=tally, now=now)
    return tally


def counter_value(key: str) -> int:
    """A quota counter's value on whichever engine is configured."""
    engine = quota_engine()
    if hasattr(engine, "client"):
        return int(engine.client.get(key) or 0)
    return QuotaCounter.objects.get(key=key).count


def grant_state(grant):
    grant.refresh_from_db()
    return grant.lifecycle, grant.session_window_closed_at, grant.expired_at


def test_grants_move_along_their_lifecycle_at_their_own_deadlines(two_orgs):
    alpha, _bravo = two_orgs
    grant = TokenGrantFactory(organization=alpha.organization, requested_at=T0)
    window, expiry = grant.new_session_expire_time, grant.expire_time

    run(lifecycle.grants_expire, T0 + timedelta(seconds=30))
    assert grant_state(grant) == (Lifecycle.ACTIVE, None, None)

    tally = run(lifecycle.grants_expire, T0 + timedelta(minutes=5))
    assert grant_state(grant) == (Lifecycle.SESSION_WINDOW_CLOSED, window, None)
    assert tally.by_organization == {alpha.organization.pk: {"session_window_closed": 1}}

    run(lifecycle.grants_expire, T0 + timedelta(hours=1))
    assert grant_state(grant) == (Lifecycle.EXPIRED, window, expiry)


def test_a_grant_found_late_skips_straight_to_expired_with_both_times(two_orgs):
    alpha, _ = two_orgs
    grant = TokenGrantFactory(organization=alpha.organization, requested_at=T0)

    run(lifecycle.grants_expire, T0 + timedelta(days=2))

    assert grant_state(grant) == (
        Lifecycle.EXPIRED,
        grant.new_session_expire_time,
        grant.expire_time,
    )


def test_expiring_twice_changes_nothing_the_second_time(two_orgs, settings):
    settings.AUDIT_BATCH_SIZE = 3  # several batches
    alpha, bravo = two_orgs
    for n in range(7):
        TokenGrantFactory(organization=alpha.organization, requested_at=T0 + timedelta(minutes=n))
        TokenGrantFactory(organization=bravo.organization, requested_at=T0)
    later = T0 + timedelta(minutes=35)

    first = run(lifecycle.grants_expire, later)
    state = list(TokenGrant.objects.order_by("id").values())
    second = run(lifecycle.grants_expire, later)

    assert first.totals() == {"expired": 13, "session_window_closed": 1}
    assert first.by_organization[bravo.organization.pk] == {"expired": 7}
    assert second.totals() == {}
    assert list(TokenGrant.objects.order_by("id").values()) == state


def test_expiring_also_prunes_the_quota_engines_ended_windows():
    ended = QuotaCounter.objects.create(key="q:1:1:60", count=3, expires_at=T0)
    current = QuotaCounter.objects.create(key="q:1:1:120", count=1, expires_at=T0 + timedelta(1))

    tally = run(lifecycle.grants_expire, T0 + timedelta(hours=1))

    assert not QuotaCounter.objects.filter(pk=ended.pk).exists()
    assert QuotaCounter.objects.filter(pk=current.pk).exists()
    assert tally.totals()["quota_counters_pruned"] == 1
    assert tally.by_organization == {}  # no organisation's record, only the engine's state


def test_pending_grants_are_abandoned_after_twice_the_timeout_and_refunded(two_orgs, settings):
    settings.GEMINI_TIMEOUT_MS = 10_000
    alpha, _ = two_orgs
    engine = quota_engine()
    limits = applicable_limits(
        organization=alpha.organization,
        client_app_id=alpha.client_app.pk,
        profile_id=alpha.profile.pk,
        end_user="",
        quotas=[alpha.quota],
        now=timezone.now(),
    )
    cap = active_cap_for(alpha.organization)
    stuck = TokenGrantFactory(
        organization=alpha.organization,
        outcome=Outcome.PENDING,
        lifecycle="",
        token_fingerprint="",
        requested_at=timezone.now() - timedelta(seconds=25),
    )
    fresh = TokenGrantFactory(
        organization=alpha.organization, outcome=Outcome.PENDING, lifecycle="", token_fingerprint=""
    )
    for grant in (stuck, fresh):
        reservation = engine.reserve(
            limits, cap, grant.public_id, timezone.now() + timedelta(minutes=30), timezone.now()
        )
        grant.quota_reservation = reservation.as_json()
        grant.save()
    assert counter_value(limits[0].key) == 2

    first = run(lifecycle.grants_reap_pending, timezone.now())
    second = run(lifecycle.grants_reap_pending, timezone.now())

    stuck.refresh_from_db()
    fresh.refresh_from_db()
    assert (stuck.outcome, stuck.error_code, stuck.quota_reservation) == (
        Outcome.ABANDONED,
        "abandoned",
        None,
    )
    assert fresh.outcome == Outcome.PENDING
    assert counter_value(limits[0].key) == 1  # exactly one refund, not two
    assert first.totals() == {"abandoned": 1}
    assert second.totals() == {}


def test_a_grant_that_finished_meanwhile_is_not_reaped(two_orgs, settings):
    alpha, _ = two_orgs
    grant = TokenGrantFactory(
        organization=alpha.organization, requested_at=timezone.now() - timedelta(hours=1)
    )

    tally = run(lifecycle.grants_reap_pending, timezone.now())

    grant.refresh_from_db()
    assert grant.outcome == Outcome.ISSUED
    assert tally.totals() == {}
