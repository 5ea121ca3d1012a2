"""Deployments for the tests that serve the portal as deploy/ does (tests/deployment.py).

The processes run on pytest-django's test database (rows the tests commit, with
``transaction=True``), with the test settings' keys, and with Redis database 11 of the test
Redis, so that the tests' own per-test flush of their Redis database never empties the
broker's queues under a running Celery worker.
"""

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.db import connection

from tests.deployment import NGINX, Deployment

SERVED_REDIS_DB = 11


def portal_environment(*, redis: bool = True) -> dict[str, str]:
    """The portal's environment for processes that share this test run's database and keys."""
    database = settings.DATABASES["default"]
    if connection.vendor == "sqlite":
        database_url = f"sqlite:///{database['NAME']}"
    else:
        password = f":{quote(database['PASSWORD'])}" if database.get("PASSWORD") else ""
        database_url = (
            f"postgres://{database['USER']}{password}@{database['HOST'] or '127.0.0.1'}:"
            f"{database['PORT'] or 5432}/{database['NAME']}"
        )
    env = {
        "DATABASE_URL": database_url,
        "SECRET_KEY": settings.SECRET_KEY,
        "FIELD_ENCRYPTION_KEYS": ",".join(settings.FIELD_ENCRYPTION_KEYS),
        "AUDIT_HMAC_KEY": settings.AUDIT_HMAC_KEY,
        "GEMINI_API_KEY": "served-test-key",
        # The tests' own connections stay below PostgreSQL's default of 100.
        "DATABASE_POOL_SIZE": "8",
    }
    if redis and settings.REDIS_URL:
        env["REDIS_URL"] = served_redis_url()
    return env


def served_redis_url() -> str:
    parts = urlsplit(settings.REDIS_URL)
    return urlunsplit(parts._replace(path=f"/{SERVED_REDIS_DB}"))


def require_nginx() -> None:
    """nginx, or a skip; a failure when EPHEMERA_REQUIRE_NGINX=1 (CI installs Debian's)."""
    if NGINX is None:
        if os.environ.get("EPHEMERA_REQUIRE_NGINX") == "1":
            pytest.fail(
                "The proxy tests must run (EPHEMERA_REQUIRE_NGINX=1), but nginx is missing."
            )
        pytest.skip("nginx is not installed (apt-get install nginx)")


def require_postgres_and_redis() -> None:
    if connection.vendor != "postgresql" or not settings.REDIS_URL:
        pytest.skip("the deployment runs on PostgreSQL + Redis (DATABASE_URL, REDIS_URL)")


@pytest.fixture(scope="session")
def static_cache(tmp_path_factory) -> Path:
    """One collectstatic for every deployment of the run (the first one fills it)."""
    return tmp_path_factory.mktemp("static")


@pytest.fixture
def deploy(tmp_path: Path, static_cache: Path) -> Iterator[Callable[..., Deployment]]:
    """Starts deployments (``deploy(web_workers=2, ...)``); each is stopped after the test."""
    started: list[Deployment] = []

    def start(*, redis: bool = True, env: dict[str, str] | None = None, **options) -> Deployment:
        flush_served_redis()
        folder = tmp_path / f"deployment{len(started)}"
        environment = {**portal_environment(redis=redis), **(env or {})}
        deployment = Deployment(environment, folder, static_cache=static_cache, **options)
        started.append(deployment)
        return deployment.start()

    yield start
    for deployment in reversed(started):
        deployment.stop()


def flush_served_redis() -> None:
    """Empty the deployments' Redis database: quota keys are named by row ids, which a new
    test database hands out again."""
    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(served_redis_url())
        client.flushdb()
        client.close()
