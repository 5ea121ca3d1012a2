"""The PostgreSQL backend's pool: a connection handed back healthy moments ago is lent without
a health check; any other is checked, and a dead one is replaced before anyone uses it."""

import psycopg
import pytest
from django.db import DatabaseError, connection

from portal.db_backends.postgresql import base as backend

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the pool is PostgreSQL's"),
]


@pytest.fixture
def checked(monkeypatch) -> list:
    """The connections the pool health-checked, in order."""
    calls = []
    check = backend.ConnectionPool.check_connection

    def counting(conn):
        calls.append(conn)
        check(conn)

    monkeypatch.setattr(backend.ConnectionPool, "check_connection", staticmethod(counting))
    return calls


def borrow() -> psycopg.Connection:
    """Check a connection out of the pool as a request's step does, use it, hand it back."""
    connection.close()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    lent = connection.connection
    connection.close()
    return lent


def test_a_connection_just_handed_back_is_lent_without_a_round_trip(checked, monkeypatch):
    monkeypatch.setattr(backend, "TRUSTED_FOR_SECONDS", 30)  # however slow this machine is
    lends = []
    for _ in range(6):
        checks_before = len(checked)
        lent = borrow()
        lends.append((lent, len(checked) > checks_before))

    # Each pooled connection comes round again within the trusted moment: no check then.
    again = [was_checked for i, (lent, was_checked) in enumerate(lends) if lent in dict(lends[:i])]
    assert again
    assert not any(again)


def test_past_the_trusted_moment_every_connection_is_checked(checked, monkeypatch):
    monkeypatch.setattr(backend, "TRUSTED_FOR_SECONDS", 0)

    lent = [borrow() for _ in range(4)]

    assert checked == lent


def test_a_connection_whose_use_failed_is_checked_before_it_is_lent_again(checked):
    connection.close()
    with pytest.raises(DatabaseError), connection.cursor() as cursor:
        cursor.execute("SELECT * FROM no_such_table")
    failed = connection.connection
    connection.close()

    lent = [borrow() for _ in range(4)]

    assert failed in lent
    assert failed in checked


def test_a_connection_the_server_dropped_is_replaced_not_lent(monkeypatch):
    monkeypatch.setattr(backend, "TRUSTED_FOR_SECONDS", 0)
    doomed = borrow()
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [doomed.info.backend_pid])

    for _ in range(4):  # every pooled connection is lent in turn: none fails its caller
        lent = borrow()
        assert lent is not doomed
    assert doomed.closed
