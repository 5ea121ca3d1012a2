"""Readiness checks against real dependencies, and real unreachable ones (closed ports)."""

import logging
import time

import pytest
from django.db.utils import ConnectionHandler

from portal import health

pytestmark = [pytest.mark.django_db, pytest.mark.asyncio]

SECRET = "probe-secret-must-not-leak"


@pytest.fixture
def unreachable_database(monkeypatch, closed_port):
    """The check's connections point at a PostgreSQL that is not there."""
    handler = ConnectionHandler(
        {
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": "ephemera",
                "USER": "ephemera",
                "PASSWORD": SECRET,
                "HOST": "127.0.0.1",
                "PORT": str(closed_port),
                "OPTIONS": {"connect_timeout": 1},
            }
        }
    )
    monkeypatch.setattr(health, "connections", handler)


async def test_everything_is_up_on_the_configured_services():
    assert await health.readiness() == {"database": True, "cache": True, "broker": True}


async def test_an_unreachable_database_is_down(unreachable_database, caplog):
    with caplog.at_level(logging.WARNING, logger="portal.health"):
        checks = await health.readiness()

    assert checks == {"database": False, "cache": True, "broker": True}
    assert "readiness check database failed: OperationalError" in caplog.text
    assert SECRET not in caplog.text


async def test_an_unreachable_redis_cache_is_down(settings, closed_port, caplog):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://:{SECRET}@127.0.0.1:{closed_port}/0",
        }
    }

    with caplog.at_level(logging.WARNING, logger="portal.health"):
        checks = await health.readiness()

    assert checks == {"database": True, "cache": False, "broker": True}
    assert SECRET not in caplog.text


async def test_an_unreachable_redis_broker_is_down(settings, closed_port, caplog):
    settings.CELERY_BROKER_URL = f"redis://:{SECRET}@127.0.0.1:{closed_port}/0"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}

    with caplog.at_level(logging.WARNING, logger="portal.health"):
        checks = await health.readiness()

    assert checks == {"database": True, "cache": True, "broker": False}
    assert SECRET not in caplog.text


async def test_a_filesystem_broker_without_its_folders_is_down(settings, tmp_path):
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(tmp_path / "missing"),
        "data_folder_out": str(tmp_path / "missing"),
        "processed_folder": str(tmp_path / "missing"),
    }

    assert (await health.readiness())["broker"] is False


async def test_a_hung_check_counts_as_down_after_the_deadline(monkeypatch):
    monkeypatch.setattr(health, "CHECK_TIMEOUT_SECONDS", 0.2)
    monkeypatch.setitem(health.READINESS_CHECKS, "cache", lambda: time.sleep(1) or True)

    started = time.monotonic()
    checks = await health.readiness()

    assert checks["cache"] is False
    assert checks["database"] is True
    assert time.monotonic() - started < 0.9
