"""Readiness checks for load balancer probes: can this process serve a token right now?

Each check answers True or False and never raises; why a check failed is logged by exception
class only, since driver messages may carry connection URLs. The checks run in a small
dedicated pool with a deadline, so a hung dependency neither stalls the probe nor starves
the event loop's default executor, which resolves host names for the Gemini gateway.

Every load balancer, the container's healthcheck and the Prometheus scrape ask; one run of
the checks answers all of them for READINESS_CACHE_SECONDS: callers that arrive while a run
is in flight wait for it, later ones reuse its answer, and the first caller after that
starts the next run. A failure is reused for no longer than a success, so a recovery shows
within about a second.
"""

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, connections

logger = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 2.0
READINESS_CACHE_SECONDS = 1.0
_FILESYSTEM_BROKER_FOLDERS = ("data_folder_in", "data_folder_out", "processed_folder")

_executor = ThreadPoolExecutor(max_workers=3, thread_name_prefix="readyz")
# One thread waits out each run's deadline, so a run ends on time whoever asked for it (an
# event loop or a sync thread such as the /metrics view) and whether or not they still wait.
_run_waiter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="readyz-run")
# The clock the cached answer's age is measured with; tests move it by hand.
_clock = time.monotonic


def database_is_reachable(alias: str = DEFAULT_DB_ALIAS) -> bool:
    """A round trip to the database; the connection goes back (or to the pool) at once."""
    connection = connections[alias]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return True
    except Exception as error:
        _log_failure("database", error)
        return False
    finally:
        connection.close()


def cache_is_reachable() -> bool:
    """A write and read of the default cache: Redis (and so the quota store) in production."""
    key = f"readyz:{uuid.uuid4().hex}"
    try:
        cache.set(key, "1", timeout=10)
        seen = cache.get(key) == "1"
        cache.delete(key)
        return seen
    except Exception as error:
        _log_failure("cache", error)
        return False


def broker_is_reachable() -> bool:
    """A connection to the Celery broker named in settings (folders for ``filesystem://``)."""
    url = settings.CELERY_BROKER_URL
    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    if url.startswith("filesystem://"):
        # kombu's filesystem transport "connects" to anything; what matters is the folders.
        return all(
            os.path.isdir(options[folder]) and os.access(options[folder], os.W_OK)
            for folder in _FILESYSTEM_BROKER_FOLDERS
        )
    from kombu import Connection

    try:
        with Connection(
            url, transport_options=options, connect_timeout=CHECK_TIMEOUT_SECONDS
        ) as broker:
            broker.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=CHECK_TIMEOUT_SECONDS
            )
        return True
    except Exception as error:
        _log_failure("broker", error)
        return False


READINESS_CHECKS: dict[str, Callable[[], bool]] = {
    "database": database_is_reachable,
    "cache": cache_is_reachable,
    "broker": broker_is_reachable,
}


@dataclass(frozen=True)
class _Answer:
    checks: dict[str, bool]
    answered_at: float


def _run_checks() -> _Answer:
    """Every check at once, each cut off after CHECK_TIMEOUT_SECONDS (then it counts as down)."""
    started = {name: _executor.submit(check) for name, check in READINESS_CHECKS.items()}
    concurrent.futures.wait(started.values(), timeout=CHECK_TIMEOUT_SECONDS)
    checks = {}
    for name, future in started.items():
        if not future.done():
            future.cancel()  # still queued behind a hung check: it need not run at all
            logger.warning("readiness check %s timed out after %ss", name, CHECK_TIMEOUT_SECONDS)
            checks[name] = False
        elif (error := future.exception()) is not None:
            _log_failure(name, error)
            checks[name] = False
        else:
            checks[name] = bool(future.result())
    return _Answer(checks, _clock())


class _SharedRun:
    """The latest run of the checks: joined while it runs, reused for a second after."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._run: Future[_Answer] | None = None

    def current(self) -> Future[_Answer]:
        with self._lock:
            if self._run is None or not self._still_good(self._run):
                self._run = _run_waiter.submit(_run_checks)
            return self._run

    def forget(self) -> None:
        with self._lock:
            self._run = None

    @staticmethod
    def _still_good(run: Future[_Answer]) -> bool:
        if not run.done():
            return True
        if run.cancelled() or run.exception() is not None:
            return False
        return _clock() - run.result().answered_at < READINESS_CACHE_SECONDS


_shared_run = _SharedRun()


async def readiness() -> dict[str, bool]:
    """Each check's answer, from this process's one run in the last READINESS_CACHE_SECONDS."""
    # Shielded: a caller that gives up (its client hung up) must not cancel everyone's run.
    answer = await asyncio.shield(asyncio.wrap_future(_shared_run.current()))
    return dict(answer.checks)


def readiness_blocking() -> dict[str, bool]:
    """``readiness()`` for sync code (the /metrics collector): the same shared run."""
    return dict(_shared_run.current().result().checks)


def readiness_forget() -> None:
    """Drop the cached answer, so the next caller runs the checks (tests change what they see)."""
    _shared_run.forget()


def _log_failure(name: str, error: Exception) -> None:
    logger.warning("readiness check %s failed: %s", name, type(error).__name__)
