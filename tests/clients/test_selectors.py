import socket

import pytest

from apps.clients.selectors import origin_is_registered

pytestmark = pytest.mark.django_db


@pytest.fixture
def redis_down(settings):
    """The cache pointed at a Redis that is not there: every call is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/0",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }


def test_registered_origins_are_answered_for_preflights(two_orgs):
    assert origin_is_registered(origin="https://alpha.test")
    assert origin_is_registered(origin="https://bravo.test")
    assert not origin_is_registered(origin="https://evil.test")


@pytest.mark.usefixtures("redis_down")
def test_with_the_cache_down_the_database_still_answers(two_orgs):
    assert origin_is_registered(origin="https://alpha.test")
    assert not origin_is_registered(origin="https://evil.test")
