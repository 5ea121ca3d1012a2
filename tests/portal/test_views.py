"""/healthz and /readyz over HTTP, as a load balancer sees them."""

import pytest
from django.db.utils import ConnectionHandler

from portal import health

SECRET = "probe-secret-must-not-leak"


def test_healthz_answers_without_touching_the_database(client):
    # No django_db mark: pytest-django fails any query this makes.
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"


@pytest.mark.django_db
def test_readyz_is_200_when_everything_is_reachable(client):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "cache": "ok", "broker": "ok"},
        "down": [],
    }
    assert response["Cache-Control"] == "no-store"


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_readyz_under_asgi(async_client):
    response = await async_client.get("/readyz")

    assert response.status_code == 200
    assert response.json()["down"] == []


@pytest.mark.django_db
def test_readyz_names_an_unreachable_database(client, monkeypatch, closed_port):
    unreachable = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "ephemera",
        "USER": "ephemera",
        "PASSWORD": SECRET,
        "HOST": "127.0.0.1",
        "PORT": str(closed_port),
        "OPTIONS": {"connect_timeout": 1},
    }
    monkeypatch.setattr(health, "connections", ConnectionHandler({"default": unreachable}))

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["down"] == ["database"]
    assert response.json()["checks"]["database"] == "down"
    assert SECRET not in response.content.decode()


@pytest.mark.django_db
def test_readyz_names_an_unreachable_cache(client, settings, closed_port):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://:{SECRET}@127.0.0.1:{closed_port}/0",
        }
    }

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert response.json()["down"] == ["cache"]
    assert SECRET not in response.content.decode()


@pytest.mark.django_db
def test_readyz_names_an_unreachable_broker(client, settings, closed_port):
    settings.CELERY_BROKER_URL = f"redis://:{SECRET}@127.0.0.1:{closed_port}/0"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["down"] == ["broker"]
    assert SECRET not in response.content.decode()
