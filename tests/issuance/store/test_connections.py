import asyncio

import psycopg
import pytest
from django.db import DatabaseError, connection, transaction

from apps.issuance.store import connections as store_connections
from apps.issuance.store.connections import (
    AsyncConnections,
    PerLoop,
    async_preparing_cursor,
    default_connection,
    preparing_cursor,
)

pytestmark = pytest.mark.django_db


def test_a_hot_statement_answers_like_any_other():
    with preparing_cursor(default_connection()) as cursor:
        cursor.execute("SELECT %s + 1", [41])
        assert cursor.fetchone() == (42,)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL prepares; SQLite not")
def test_postgresql_plans_a_hot_statement_once_per_connection():
    for answer in (2, 3):
        with preparing_cursor(default_connection()) as cursor:
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
    with pytest.raises(DatabaseError), transaction.atomic(), preparing_cursor(db) as cursor:
        cursor.execute("SELECT * FROM no_such_table WHERE id = %s", [1])

    with preparing_cursor(db) as cursor:  # the connection is still usable
        cursor.execute("SELECT %s", [1])
        assert cursor.fetchone() == (1,)


class Counted:
    """A resource that notes what was done with it."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        log.append("built")

    async def close(self) -> None:
        self.log.append("closed")


def test_a_per_loop_resource_is_shared_within_its_loop_and_closed_when_the_loop_ends():
    log: list[str] = []
    per_loop = PerLoop(lambda: Counted(log), Counted.close)

    async def use() -> set[int]:
        return {id(resource) for resource in await asyncio.gather(*[per_loop.get()] * 5)}

    assert len(asyncio.run(use())) == 1  # five concurrent first uses, one resource
    assert log == ["built", "closed"]
    with asyncio.Runner() as runner:
        runner.run(use())
    assert log == ["built", "closed"] * 2
    assert per_loop.open_in() == []


def test_a_caller_past_the_cap_waits_then_gets_a_clear_error():
    connections = AsyncConnections(lambda: asyncio.sleep(0, result=FakeConnection()), 1, 0.05)

    async def two_at_once() -> None:
        async with connections.connection(), connections.connection():
            pass

    with pytest.raises(psycopg.OperationalError, match="no database connection free"):
        asyncio.run(two_at_once())


class FakeConnection:
    broken = False

    class info:  # psycopg's attribute name
        transaction_status = psycopg.pq.TransactionStatus.IDLE


on_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="asyncio connections are PostgreSQL's only"
)


def backends() -> int:
    """Connections to the test database other than this thread's own."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


async def terminate(pid: int) -> None:
    """What a server restart does to one connection, from a connection of its own."""
    params = default_connection().get_connection_params()
    params.pop("cursor_factory", None)
    async with await psycopg.AsyncConnection.connect(**params, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", [pid])


async def scalar(sql: str, params=()) -> object:
    async with async_preparing_cursor() as cursor:
        await cursor.execute(sql, list(params))
        return (await cursor.fetchone())[0]


@on_postgresql
def test_the_loops_statements_are_prepared_once_and_its_connection_closes_with_it():
    before = backends()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        test_pid = cursor.fetchone()[0]

    async def statements() -> tuple:
        answers = [await scalar("SELECT %s::int + 1 AS loop_probe", [n]) for n in (1, 2)]
        prepared = await scalar(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
            ["%loop_probe%"],
        )
        during = await scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> %s",
            [test_pid],
        )
        return answers, prepared, during

    answers, prepared, during = asyncio.run(statements())

    assert answers == [2, 3]
    assert prepared == 1
    assert during == before + 1  # one connection served every statement
    assert backends() == before


@on_postgresql
def test_a_failing_statement_on_the_loop_raises_djangos_error_and_the_connection_serves_on():
    async def fail_then_answer() -> tuple:
        pid = await scalar("SELECT pg_backend_pid()")
        with pytest.raises(DatabaseError):
            await scalar("SELECT * FROM no_such_table WHERE id = %s", [1])
        return pid, await scalar("SELECT pg_backend_pid()")

    first, second = asyncio.run(fail_then_answer())
    assert first == second


@on_postgresql
@pytest.mark.parametrize("trusted_for", [30, 0])
def test_a_connection_the_server_dropped_is_not_lent_again(monkeypatch, trusted_for):
    """Handed back moments ago, it is lent unchecked: the one statement on it fails, and the
    next gets a new connection. Idle longer, it is checked first and nothing fails."""
    monkeypatch.setattr(store_connections, "TRUSTED_FOR_SECONDS", trusted_for)

    async def across_a_server_restart() -> tuple:
        dropped = await scalar("SELECT pg_backend_pid()")
        await terminate(dropped)
        failures = 0
        try:
            await scalar("SELECT 1")
        except DatabaseError:
            failures += 1
        return dropped, failures, await scalar("SELECT pg_backend_pid()")

    dropped, failures, serving = asyncio.run(across_a_server_restart())
    assert failures == (1 if trusted_for else 0)
    assert serving != dropped
