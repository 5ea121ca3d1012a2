"""Connections and cursors for the statements issuance runs on every request.

``preparing_cursor`` and ``async_preparing_cursor`` prepare their statements server-side on
PostgreSQL (docs/adr/0003-raw-sql-on-the-hot-path.md); ``async_connections`` keeps a few
asyncio PostgreSQL connections per event loop for the event-loop store
(docs/adr/0002-issuance-on-the-event-loop.md), checked as the pool's backend checks its own
(docs/adr/0004-postgresql-pool-trusted-window.md).
"""

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Generic, TypeVar

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.utils import load_backend

from portal.db_backends.postgresql.base import TRUSTED_FOR_SECONDS

T = TypeVar("T")


def default_connection() -> BaseDatabaseWrapper:
    """This thread's connection to the default database, looked up once.

    ``django.db.connection`` looks the connection up again in a context-aware local on every
    attribute access, and a token's database steps touch it dozens of times
    (docs/adr/0003-raw-sql-on-the-hot-path.md).
    """
    return connections[DEFAULT_DB_ALIAS]


class _PreparingCursor:
    """A psycopg cursor that asks PostgreSQL to plan each statement once per connection."""

    def __init__(self, cursor, db: BaseDatabaseWrapper) -> None:
        self._cursor = cursor
        self._db = db

    def execute(self, sql: str, params: Sequence[Any]) -> None:
        with self._db.wrap_database_errors:  # psycopg's errors as Django's, as usual
            self._cursor.execute(sql, params, prepare=True)

    def fetchone(self):
        return self._cursor.fetchone()

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount


@contextmanager
def preparing_cursor(db: BaseDatabaseWrapper) -> Iterator[Any]:
    """A cursor for statements run on every request, prepared where that pays.

    On PostgreSQL, planning the client-key lookup costs more than running it, and likewise
    the grant's wide INSERT and UPDATE (docs/adr/0003-raw-sql-on-the-hot-path.md). Django's
    psycopg cursors bind parameters client-side and cannot prepare, so this is a server-binding
    cursor on the same connection, in the same transaction; psycopg keeps the prepared
    statements with the pooled connection. Elsewhere it is Django's own cursor.
    """
    if db.vendor != "postgresql":
        with db.cursor() as cursor:
            yield cursor
        return
    db.ensure_connection()
    with psycopg.Cursor(db.connection) as cursor:
        yield _PreparingCursor(cursor, db)


class PerLoop(Generic[T]):
    """One resource per running event loop, closed when that loop shuts down.

    Asyncio connections belong to the loop that opened them, and a process may run several
    loops over its life (a test suite runs one per test). The resource is built on first
    use in a loop and closed by the loop's own shutdown (``asyncio.run``, ``asyncio.Runner``
    and uvicorn finalise async generators before closing a loop), so no loop leaves
    connections behind.
    """

    def __init__(self, build: Callable[[], T], close: Callable[[T], Awaitable[Any]]) -> None:
        self._build, self._close = build, close
        self._by_loop: dict[asyncio.AbstractEventLoop, tuple[T, AsyncGenerator]] = {}

    async def get(self) -> T:
        loop = asyncio.get_running_loop()
        entry = self._by_loop.get(loop)
        if entry is None:
            resource = self._build()
            closer = self._closed_at_shutdown(loop, resource)
            self._by_loop[loop] = entry = (resource, closer)
            await anext(closer)  # now the loop knows it, and finalises it at shutdown
        return entry[0]

    async def _closed_at_shutdown(self, loop, resource: T) -> AsyncGenerator[None]:
        try:
            yield
        finally:
            self._by_loop.pop(loop, None)
            await self._close(resource)

    def open_in(self) -> list[asyncio.AbstractEventLoop]:
        """The loops this resource is open in (for tests: none should outlive its loop)."""
        return list(self._by_loop)


class _AsyncPreparingCursor:
    """``_PreparingCursor`` for an asyncio connection (``async_preparing_cursor`` names its
    errors)."""

    def __init__(self, cursor: psycopg.AsyncCursor, db: BaseDatabaseWrapper) -> None:
        self._cursor = cursor
        self.db = db

    async def execute(self, sql: str, params: Sequence[Any]) -> None:
        await self._cursor.execute(sql, params, prepare=True)

    async def fetchone(self):
        return await self._cursor.fetchone()

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount


class AsyncConnections:
    """A few asyncio PostgreSQL connections for one event loop, lent one block at a time.

    psycopg_pool's ``AsyncConnectionPool`` keeps maintenance tasks running on its loop; a
    loop shutting down cancels those before it finalises anything, and the pool's
    connections then outlive the loop. This keeps no task: connections are opened when
    needed (up to ``max_size`` lent at once; a caller past that waits up to ``timeout``),
    kept idle between blocks, and closed by ``close``. Like the sync pool's backend, a
    connection handed back healthy moments ago is lent unchecked; an older one is checked
    with an empty query first.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[psycopg.AsyncConnection]],
        max_size: int,
        timeout: float,
        db: BaseDatabaseWrapper | None = None,
    ) -> None:
        self.db = db  # Django's wrapper for these connections' SQL dialect and errors
        self._connect = connect
        self._timeout = timeout
        self._slots = asyncio.Semaphore(max_size)
        self._idle: list[tuple[psycopg.AsyncConnection, float]] = []

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        if self._slots.locked():
            try:
                await asyncio.wait_for(self._slots.acquire(), self._timeout)
            except TimeoutError:
                raise psycopg.OperationalError(
                    f"no database connection free within {self._timeout} s"
                ) from None
        else:
            await self._slots.acquire()  # free: no suspension
        try:
            connection = await self._checkout()
            try:
                yield connection
            finally:
                await self._checkin(connection)
        finally:
            self._slots.release()

    async def _checkout(self) -> psycopg.AsyncConnection:
        while self._idle:
            connection, handed_back = self._idle.pop()
            if time.monotonic() - handed_back < TRUSTED_FOR_SECONDS:
                return connection
            try:
                await connection.execute("")
            except psycopg.Error:
                await connection.close()
                continue
            return connection
        return await self._connect()

    async def _checkin(self, connection: psycopg.AsyncConnection) -> None:
        idle = psycopg.pq.TransactionStatus.IDLE
        if connection.broken or connection.info.transaction_status != idle:
            await connection.close()
        else:
            self._idle.append((connection, time.monotonic()))

    async def close(self) -> None:
        while self._idle:
            await self._idle.pop()[0].close()


def _async_connections() -> AsyncConnections:
    """Connections made exactly as Django makes its own (adapters, time zone, prepared
    statements), in autocommit: each statement on them commits on its own."""
    db = default_connection()
    params = db.get_connection_params()
    params.pop("cursor_factory", None)  # Django's client-side binding; these cursors prepare
    sized = db.settings_dict["OPTIONS"].get("pool") or {}
    time_zone = db.timezone_name

    async def connect() -> psycopg.AsyncConnection:
        connection = await psycopg.AsyncConnection.connect(**params, autocommit=True)
        if connection.info.parameter_status("TimeZone") != time_zone:
            await connection.execute(db.ops.set_time_zone_sql(), [time_zone])
        return connection

    return AsyncConnections(
        connect, max_size=sized.get("max_size", 20), timeout=sized.get("timeout", 10), db=db
    )


async_connections: PerLoop[AsyncConnections] = PerLoop(
    _async_connections, lambda connections: connections.close()
)


@asynccontextmanager
async def async_preparing_cursor() -> AsyncIterator[_AsyncPreparingCursor]:
    """``preparing_cursor`` on the event loop: a pooled PostgreSQL connection, in autocommit, held
    for the block only. For the few statements issuance runs on every request.

    The cursor's ``db`` is Django's wrapper for adapting values and naming errors, made once
    per loop: ``connections[...]`` makes a new one in every new asyncio context (request).
    """
    connections = await async_connections.get()
    with connections.db.wrap_database_errors:  # its statements' and the checkout's errors
        async with connections.connection() as connection, connection.cursor() as cursor:
            yield _AsyncPreparingCursor(cursor, connections.db)


def default_vendor() -> str:
    """The default database's vendor, read from its backend without making a connection
    object (``connections[...]`` makes one per asyncio context: per request on the loop)."""
    engine = connections.settings[DEFAULT_DB_ALIAS]["ENGINE"]
    return load_backend(engine).DatabaseWrapper.vendor
