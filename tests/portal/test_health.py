"""Readiness checks against real dependencies, and real unreachable ones (closed ports)."""

import asyncio
import logging
import threading
from collections import Counter

import pytest
from django.db.utils import ConnectionHandler

from portal import health

pytestmark = [pytest.mark.django_db, pytest.mark.asyncio]

SECRET = "probe-secret-must-not-leak"


class FakeClock:
    """health's monotonic clock, moved by hand: what a second is, without waiting one."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(health, "_clock", fake)
    return fake


class CheckCalls:
    """The real checks, counted; ``hold()`` keeps them from answering until ``release()``."""

    def __init__(self, monkeypatch) -> None:
        self.count: Counter = Counter()
        self._go = threading.Event()
        self._go.set()
        for name, check in list(health.READINESS_CHECKS.items()):
            monkeypatch.setitem(health.READINESS_CHECKS, name, self._counted(name, check))

    def _counted(self, name, check):
        def counted() -> bool:
            self.count[name] += 1
            self._go.wait(timeout=30)
            return check()

        return counted

    def hold(self) -> None:
        self._go.clear()

    def release(self) -> None:
        self._go.set()


@pytest.fixture
def check_calls(monkeypatch) -> CheckCalls:
    return CheckCalls(monkeypatch)


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
    monkeypatch.setattr(health, "CHECK_TIMEOUT_SECONDS", 1.0)
    release, finished = threading.Event(), threading.Event()

    def hung_cache() -> bool:
        release.wait(timeout=60)
        finished.set()
        return True

    monkeypatch.setitem(health.READINESS_CHECKS, "cache", hung_cache)

    checks = await health.readiness()
    answered_while_hung = not finished.is_set()
    release.set()

    assert answered_while_hung  # at the deadline, not when the check gave up
    assert checks["cache"] is False
    assert checks["database"] is True


ONE_RUN = {"database": 1, "cache": 1, "broker": 1}


async def test_concurrent_readyz_callers_share_one_run_of_the_checks(
    async_client, check_calls, clock
):
    check_calls.hold()
    callers = [asyncio.create_task(async_client.get("/readyz")) for _ in range(20)]
    for _ in range(300):  # bounded: until the first caller's run is under way
        if check_calls.count["database"]:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # the other callers arrive while that run is held
    check_calls.release()

    responses = await asyncio.wait_for(asyncio.gather(*callers), timeout=30)

    assert [response.status_code for response in responses] == [200] * 20
    assert {response.json()["status"] for response in responses} == {"ok"}
    assert check_calls.count == ONE_RUN


async def test_the_answer_is_reused_for_one_second_then_checked_again(
    async_client, check_calls, clock
):
    await async_client.get("/readyz")
    clock.advance(0.9)
    within_the_second = await async_client.get("/readyz")

    assert within_the_second.status_code == 200
    assert check_calls.count == ONE_RUN

    clock.advance(0.2)
    after_the_second = await async_client.get("/readyz")

    assert after_the_second.status_code == 200
    assert check_calls.count == {"database": 2, "cache": 2, "broker": 2}


async def test_a_failure_is_reused_for_at_most_a_second(async_client, settings, closed_port, clock):
    reachable = settings.CACHES
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{closed_port}/0",
        }
    }
    down = await async_client.get("/readyz")
    settings.CACHES = reachable  # the cache is back

    still_reported_down = await async_client.get("/readyz")
    clock.advance(1.0)
    recovered = await async_client.get("/readyz")

    assert down.status_code == 503
    assert down.json()["down"] == ["cache"]
    assert still_reported_down.status_code == 503
    assert recovered.status_code == 200
    assert recovered.json() == {
        "status": "ok",
        "checks": {"database": "ok", "cache": "ok", "broker": "ok"},
        "down": [],
    }


async def test_sync_callers_share_the_event_loops_answer(check_calls, clock):
    on_the_loop = await health.readiness()
    from_a_thread = await asyncio.to_thread(health.readiness_blocking)

    assert on_the_loop == from_a_thread == {"database": True, "cache": True, "broker": True}
    assert check_calls.count == ONE_RUN
