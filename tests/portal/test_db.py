import pytest
from django.db import DatabaseError, connection, transaction

from portal.db import default_connection, hot_cursor

pytestmark = pytest.mark.django_db


def test_a_hot_statement_answers_like_any_other():
    with hot_cursor(default_connection()) as cursor:
        cursor.execute("SELECT %s + 1", [41])
        assert cursor.fetchone() == (42,)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL prepares; SQLite not")
def test_postgresql_plans_a_hot_statement_once_per_connection():
    for answer in (2, 3):
        with hot_cursor(default_connection()) as cursor:
            cursor.execute("SELECT %s::int + 1 AS hot_statement_probe", [answer - 1])
            assert cursor.fetchone() == (answer,)

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
            ["%hot_statement_probe%"],
        )
        assert cursor.fetchone() == (1,)


def test_a_failing_hot_statement_raises_djangos_error_and_rolls_back_cleanly():
    db = default_connection()
    with pytest.raises(DatabaseError), transaction.atomic(), hot_cursor(db) as cursor:
        cursor.execute("SELECT * FROM no_such_table WHERE id = %s", [1])

    with hot_cursor(db) as cursor:  # the connection is still usable
        cursor.execute("SELECT %s", [1])
        assert cursor.fetchone() == (1,)
