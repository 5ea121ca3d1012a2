"""Readiness checks for load balancer probes: can this process serve a token right now?

Each check answers True or False and never raises; why a check failed is logged by exception
class only, since driver messages may carry connection URLs. The checks run in a small
dedicated pool with a deadline, so a hung dependency neither stalls the probe nor starves
the event loop's default executor, which resolves host names for the Gemini gateway.
"""

import asyncio
import logging
import os
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, connections

logger = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 2.0
_FILESYSTEM_BROKER_FOLDERS = ("data_folder_in", "data_folder_out", "processed_folder")

_executor = ThreadPoolExecutor(max_workers=3, thread_name_prefix="readyz")


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


async def readiness() -> dict[str, bool]:
    """Every check at once, each cut off after CHECK_TIMEOUT_SECONDS (then it counts as down)."""
    names = list(READINESS_CHECKS)
    results = await asyncio.gather(
        *(_run_with_deadline(name, check) for name, check in READINESS_CHECKS.items())
    )
    return dict(zip(names, results, strict=True))


async def _run_with_deadline(name: str, check: Callable[[], bool]) -> bool:
    future = asyncio.get_running_loop().run_in_executor(_executor, check)
    try:
        return await asyncio.wait_for(future, timeout=CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        logger.warning("readiness check %s timed out after %ss", name, CHECK_TIMEOUT_SECONDS)
        return False


def _log_failure(name: str, error: Exception) -> None:
    logger.warning("readiness check %s failed: %s", name, type(error).__name__)
