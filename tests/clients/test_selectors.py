import socket
from datetime import UTC, datetime, timedelta

import pytest

from apps.audit.services import RunTally, usage_rollup
from apps.clients import services as client_services
from apps.clients.selectors import (
    IssuedCounts,
    client_app_issued_counts,
    client_key_issued_counts,
    origin_is_registered,
)
from tests.factories import TokenGrantFactory

pytestmark = pytest.mark.django_db

NOON = datetime(2030, 3, 10, 12, 0, tzinfo=UTC)


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


# --- tokens issued per app and per key: today and the last 7 days ----------------------------


def issued(world, at, *, app=None, key=None, outcome="issued"):
    return TokenGrantFactory(
        organization=world.organization,
        client_app=app or world.client_app,
        client_key_prefix=(key or world.client_key).prefix,
        requested_at=at,
        outcome=outcome,
    )


@pytest.fixture
def week_of_grants(two_orgs):
    """Alpha's app: 3 tokens today (one not rolled up yet), 1 three days ago, 1 too old to
    count, 1 refusal; a second app: 1 today; Bravo: 1 today. Times relative to NOON."""
    alpha, bravo = two_orgs
    second_app = client_services.client_app_create(
        organization=alpha.organization, actor=None, name="Alpha kiosk"
    )
    second_key, _ = client_services.client_key_create(
        organization=alpha.organization, client_app=second_app, actor=None, label="kiosk"
    )
    for at in (NOON, NOON - timedelta(hours=11), NOON - timedelta(days=3)):
        issued(alpha, at)
    issued(alpha, NOON - timedelta(days=7))  # the 8th day back: outside the window
    issued(alpha, NOON, outcome="denied_quota")
    issued(alpha, NOON, app=second_app, key=second_key)
    issued(bravo, NOON)
    usage_rollup(tally=RunTally(), now=NOON + timedelta(days=1))  # all of the above counted
    issued(alpha, NOON + timedelta(minutes=1))  # the tail the rollup has not reached
    return alpha, second_app, second_key


def test_app_counts_are_the_rollups_plus_the_tail_for_a_whole_list_at_once(
    week_of_grants, django_assert_num_queries
):
    alpha, second_app, _ = week_of_grants

    with django_assert_num_queries(3):
        counts = client_app_issued_counts(
            organization=alpha.organization,
            app_ids=[alpha.client_app.pk, second_app.pk],
            today=NOON.date(),
        )

    assert counts == {
        alpha.client_app.pk: IssuedCounts(today=3, week=4),
        second_app.pk: IssuedCounts(today=1, week=1),
    }


def test_key_counts_come_per_key_and_never_from_another_org(week_of_grants, two_orgs):
    alpha, second_app, second_key = week_of_grants
    _, bravo = two_orgs

    counts = client_key_issued_counts(
        organization=alpha.organization,
        app_ids=[alpha.client_app.pk, second_app.pk, bravo.client_app.pk],
        today=NOON.date(),
    )

    assert counts == {
        alpha.client_key.prefix: IssuedCounts(today=3, week=4),
        second_key.prefix: IssuedCounts(today=1, week=1),
    }
    bravo_apps = client_app_issued_counts(
        organization=alpha.organization, app_ids=[bravo.client_app.pk], today=NOON.date()
    )
    assert bravo_apps == {}
