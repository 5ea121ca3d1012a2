"""The grant lifecycle's beat tasks: recorded as CleanupRuns, and runnable by a real worker."""

from datetime import timedelta

import pytest
from celery.contrib.testing.worker import start_worker
from django.utils import timezone

from apps.audit.models import CleanupRun
from apps.issuance import tasks
from portal.celery import app as celery_app
from tests.conftest import TenantWorld, make_world
from tests.factories import TokenGrantFactory


@pytest.fixture
def two_orgs(db) -> tuple[TenantWorld, TenantWorld]:
    """As tests/audit's: Alpha and Bravo, each with an issued, sealed grant not yet due."""
    return make_world("Alpha", with_audit_trail=True), make_world("Bravo", with_audit_trail=True)


def test_the_tasks_keep_the_names_the_beat_and_the_task_runs_use(two_orgs):
    """The beat schedule and queued messages name the tasks ``audit.*``; the dashboard,
    /metrics and the alerts read the CleanupRun task names."""
    alpha, _ = two_orgs
    TokenGrantFactory(
        organization=alpha.organization,
        outcome="pending",
        lifecycle="",
        requested_at=timezone.now() - timedelta(hours=1),
    )

    counts = tasks.reap_pending.apply().get()

    assert (tasks.expire_grants.name, tasks.reap_pending.name) == (
        "audit.expire_grants",
        "audit.reap_pending",
    )
    assert counts == {"abandoned": 1}
    assert CleanupRun.objects.get(task="reap_pending", organization=None).counts == counts
    assert CleanupRun.objects.get(task="reap_pending", organization=alpha.organization).counts == {
        "abandoned": 1
    }


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
