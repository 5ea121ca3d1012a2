"""A real Celery worker consumes from the configured broker (filesystem, or Redis in CI)."""

from datetime import datetime, timedelta

from celery.contrib.testing.worker import start_worker
from django.conf import settings
from django.utils import timezone

from portal.celery import app as celery_app
from portal.tasks import heartbeat


def test_worker_runs_a_task_sent_through_the_broker():
    with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=20):
        result = heartbeat.delay()
        ran_at = datetime.fromisoformat(result.get(timeout=30))

    assert abs(timezone.now() - ran_at) < timedelta(minutes=1)
    assert result.successful()


def test_broker_matches_the_environment():
    if settings.REDIS_URL:
        assert settings.CELERY_BROKER_URL == settings.REDIS_URL
    else:
        assert settings.CELERY_BROKER_URL == "filesystem://"


def test_beat_schedule_names_registered_tasks():
    celery_app.loader.import_default_modules()
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        assert entry["task"] in celery_app.tasks
