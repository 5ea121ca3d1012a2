"""The beat's audit tasks: thin, idempotent, recorded, and runnable by a real worker."""

from datetime import timedelta

import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings
from django.utils import timezone

from apps.audit import tasks
from apps.audit.models import AuditSeal, CleanupRun, TokenGrant, UsageDaily
from portal.celery import app as celery_app
from tests.factories import TokenGrantFactory

AUDIT_TASKS = CleanupRun.TASKS


def audit_state() -> dict:
    return {
        "grants": list(TokenGrant.objects.order_by("id").values()),
        "seals": list(AuditSeal.objects.order_by("id").values()),
        "usage": list(UsageDaily.objects.order_by("id").values()),
    }


@pytest.mark.django_db
def test_each_task_run_twice_changes_nothing_the_second_time(two_orgs):
    alpha, bravo = two_orgs
    long_ago = timezone.now() - timedelta(days=400)
    for world in (alpha, bravo):
        TokenGrantFactory(organization=world.organization, requested_at=long_ago)
        TokenGrantFactory(
            organization=world.organization,
            requested_at=timezone.now() - timedelta(hours=1),
            outcome="pending",
            lifecycle="",
        )
        TokenGrantFactory(
            organization=world.organization, requested_at=timezone.now() - timedelta(minutes=10)
        )

    for name in AUDIT_TASKS:
        getattr(tasks, name).apply().get()
        state = audit_state()
        second = getattr(tasks, name).apply().get()
        assert second == {}, f"{name} did more on its second run: {second}"
        assert audit_state() == state, name

    assert CleanupRun.objects.filter(organization=None).count() == 2 * len(AUDIT_TASKS)
    assert set(CleanupRun.objects.values_list("task", flat=True)) == set(AUDIT_TASKS)


@pytest.mark.django_db
def test_the_schedule_runs_every_audit_task():
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {f"audit.{name}" for name in AUDIT_TASKS} <= scheduled


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_expires_grants_through_the_broker(two_orgs):
    alpha, _ = two_orgs
    grant = TokenGrantFactory(
        organization=alpha.organization, requested_at=timezone.now() - timedelta(hours=1)
    )

    with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=20):
        counts = tasks.expire_grants.delay().get(timeout=30)

    grant.refresh_from_db()
    assert counts == {"expired": 1}
    assert (grant.lifecycle, grant.expired_at) == ("expired", grant.expire_time)
    assert CleanupRun.objects.get(task="expire_grants", organization=alpha.organization).counts == {
        "expired": 1
    }
