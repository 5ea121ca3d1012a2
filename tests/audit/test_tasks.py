"""The beat's audit tasks: thin, idempotent and recorded. The grant lifecycle's two are the
issuance app's (tests/issuance/test_tasks.py); here every task in ``CleanupRun.TASKS`` is run
by its Celery name, as the beat sends it."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from apps.audit.models import AuditSeal, CleanupRun, TokenGrant, UsageDaily
from portal.celery import app as celery_app
from tests.factories import TokenGrantFactory

AUDIT_TASKS = CleanupRun.TASKS


def task_named(name: str):
    """The task the beat sends for a CleanupRun task name, from the apps Celery discovers."""
    celery_app.loader.import_default_modules()
    return celery_app.tasks[f"audit.{name}"]


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
        task_named(name).apply().get()
        state = audit_state()
        second = task_named(name).apply().get()
        assert second == {}, f"{name} did more on its second run: {second}"
        assert audit_state() == state, name

    assert CleanupRun.objects.filter(organization=None).count() == 2 * len(AUDIT_TASKS)
    assert set(CleanupRun.objects.values_list("task", flat=True)) == set(AUDIT_TASKS)


@pytest.mark.django_db
def test_the_schedule_runs_every_audit_task():
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {f"audit.{name}" for name in AUDIT_TASKS} <= scheduled
