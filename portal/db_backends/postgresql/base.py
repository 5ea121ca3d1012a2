"""Django's PostgreSQL backend, with a pool that trusts a connection it was just handed back.

Django's pool health check (``CONN_HEALTH_CHECKS``) costs a round trip on every checkout,
and issuance checks a connection out twice per token (before and after Google answers;
docs/adr/0004-postgresql-pool-trusted-window.md). This backend checks a lent connection
itself, unless it was handed back healthy less than ``TRUSTED_FOR_SECONDS`` ago (HikariCP's
``aliveBypassWindowMs`` does the same); one that fails its check is dropped and the next one
tried, as the pool's own check would. The price: a connection the server drops within that
half second of its last use is lent unchecked, and the one request that gets it fails.
"""

import time
import weakref

import psycopg
from django.db.backends.postgresql import base
from psycopg_pool import ConnectionPool

TRUSTED_FOR_SECONDS = 0.5

_handed_back_healthy: "weakref.WeakKeyDictionary[psycopg.Connection, float]" = (
    weakref.WeakKeyDictionary()
)


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params):
        if not self.pool:
            return super().get_new_connection(conn_params)
        while True:  # bounded: getconn raises once the pool has nothing left to lend
            connection = super().get_new_connection(conn_params)
            handed_back = _handed_back_healthy.pop(connection, None)
            if handed_back is not None and time.monotonic() - handed_back < TRUSTED_FOR_SECONDS:
                return connection
            try:
                ConnectionPool.check_connection(connection)
            except psycopg.Error:
                self.pool.putconn(connection)  # a broken connection is closed, not kept
                continue
            return connection

    def _close(self):
        connection = self.connection
        healthy = (
            self.pool is not None
            and connection is not None
            and not connection.broken
            and not self.errors_occurred
        )
        if healthy:  # stamped first: once back in the pool, another thread may take it
            _handed_back_healthy[connection] = time.monotonic()
        super()._close()
