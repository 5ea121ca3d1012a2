"""The store whose every statement runs in issuance's database threads.

Django's default for sync code under ASGI is a fresh thread per request (thread_sensitive),
and with it a fresh connection: on SQLite a connect, a dozen function registrations and, on
close, a WAL checkpoint, every request. A few long-lived threads keep their SQLite
connection (opened lazily, closed if it errs); on PostgreSQL each step still hands its
connection back to the pool. Every step is self-contained (its own transactions, nothing
left open), so no request's state leaks into the next; tests that issue tokens therefore
commit their data (``transaction=True``). SQLite has one writer at a time, so one thread:
a process's steps queue in memory instead of in SQLite's busy handler, which sleeps for
milliseconds between retries. PostgreSQL: ``ISSUANCE_DB_THREADS``
(docs/adr/0010-issuance-database-threads.md).
"""

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import signals
from django.utils import timezone

from apps.audit.models import TokenGrant
from apps.clients.keys import parse_key, usable_key
from apps.clients.models import ClientKey
from apps.issuance import rules
from apps.issuance.policy_cache import IssuancePolicy, issuance_policy_for
from apps.issuance.quotas import DatabaseQuotaEngine, QuotaBackendUnavailable, quota_engine
from apps.issuance.rules import Approved, PendingGrant
from apps.issuance.store import sql
from apps.issuance.store.base import IssuanceStore, logger
from apps.issuance.store.connections import default_connection, preparing_cursor
from apps.tenants.models import Organization

Outcome = TokenGrant.Outcome

_db_threads = ThreadPoolExecutor(
    max_workers=1 if connection.vendor == "sqlite" else max(1, settings.ISSUANCE_DB_THREADS),
    thread_name_prefix="issuance-db",
)


def _submit(function: Callable, *args) -> Future:
    """``function`` queued on issuance's database threads, in a copy of the caller's context:
    what ``sync_to_async(thread_sensitive=False)`` does, without its per-call bookkeeping."""
    return _db_threads.submit(contextvars.copy_context().run, function, *args)


async def in_db_thread(function: Callable, *args):
    """``function(*args)`` in issuance's database threads, its connection released after."""
    return await asyncio.wrap_future(_submit(_step, function, *args))


def _step(function: Callable, *args):
    try:
        return function(*args)
    finally:
        release_connection()


def release_connection() -> None:
    """End a step: no thread holds a pooled connection while Google answers.

    PostgreSQL's goes back to the pool. SQLite's stays with its thread for the next step,
    unless a database error may have left it unusable.
    """
    db = default_connection()
    if db.in_atomic_block:
        return
    if db.vendor == "postgresql" or db.errors_occurred:
        db.close()


class ThreadedStore(IssuanceStore):
    async def client_key(self, raw_key: str) -> ClientKey | None:
        return await in_db_thread(client_key_now, raw_key)

    async def load_policy(self, organization: Organization) -> IssuancePolicy:
        return await in_db_thread(issuance_policy_for, organization)

    async def record_refusal(self, grant: TokenGrant) -> bool:
        return await in_db_thread(record_refusal_now, grant)

    def _start_reserving(self, approved: Approved, now: datetime):
        step = _submit(_step, reserve_and_record_now, approved, now)
        return asyncio.wrap_future(step), step.cancel  # a step still queued never runs

    async def record_issued(self, grant: TokenGrant) -> bool:
        return await in_db_thread(update_pending_grant, grant, rules.ISSUED_FIELDS)

    async def record_failed(self, pending: PendingGrant) -> bool:
        return await in_db_thread(record_failed_now, pending)

    def _write_key_use(self, prefix: str, app_id: int, at: datetime, cutoff: datetime) -> Future:
        return _submit(_step, key_use_write_now, prefix, app_id, at, cutoff)


# --- The steps, synchronous, as they run in a database thread ---------------------------


def client_key_now(raw_key: str) -> ClientKey | None:
    parsed = parse_key(raw_key)
    key = None
    if parsed is not None:
        db = default_connection()
        lookup = sql.key_lookup(db)
        with preparing_cursor(db) as cursor:
            cursor.execute(lookup.sql, [parsed.prefix])
            key = sql.key_from_row(cursor.fetchone(), lookup, db)
    return usable_key(parsed, key, timezone.now())


def record_refusal_now(grant: TokenGrant) -> bool:
    if grant.pk is None:
        insert_grant(grant)
        return True
    return update_pending_grant(grant, rules.REFUSED_FIELDS)


def reserve_and_record_now(approved: Approved, now: datetime) -> PendingGrant:
    grant = approved.grant
    engine = quota_engine()
    in_database = isinstance(engine, DatabaseQuotaEngine)
    # The database engine's counters and the PENDING row: one transaction, both or neither.
    # A Redis reservation lives outside the database, so there the row is a single
    # autocommit INSERT (one round trip, where BEGIN … COMMIT costs three) and the
    # reservation is given back if the row cannot be written.
    with transaction.atomic() if in_database else nullcontext():
        reservation = engine.reserve(
            approved.limits, approved.cap, grant.public_id, grant.expire_time, now
        )
        try:
            grant.quota_reservation = reservation.as_json()
            insert_grant(grant)
        except Exception:
            grant.quota_reservation = None
            if not in_database:
                engine.refund(reservation)
            raise
    return PendingGrant(grant, approved.profile, reservation, approved.api_key)


def record_failed_now(pending: PendingGrant) -> bool:
    grant = pending.grant
    still_pending = TokenGrant.objects.filter(pk=grant.pk, outcome=Outcome.PENDING)
    outcome = {name: getattr(grant, name) for name in rules.FAILED_FIELDS}
    try:
        with transaction.atomic():
            quota_engine().refund(pending.reservation)
            grant.quota_reservation = None
            recorded = still_pending.update(**outcome, quota_reservation=None)
    except QuotaBackendUnavailable:
        logger.warning("quota refund failed for grant %s; it will lapse", grant.public_id)
        recorded = still_pending.update(**outcome)
    return bool(recorded)


def key_use_write_now(prefix: str, app_id: int, at: datetime, cutoff: datetime) -> None:
    db = default_connection()
    key_update, app_update = sql.key_use_updates()
    key_values, app_values = sql.key_use_values(prefix, app_id, at, cutoff, db)
    with transaction.atomic(), preparing_cursor(db) as cursor:
        cursor.execute(key_update, key_values)
        cursor.execute(app_update, app_values)


def insert_grant(grant: TokenGrant) -> None:
    db = default_connection()
    if not raw_writes_allowed(db):
        grant.save(force_insert=True)
        return
    statement, fields = sql.grant_insert()
    with preparing_cursor(db) as cursor:
        cursor.execute(statement, sql.grant_insert_values(grant, fields, db))
        grant.pk = cursor.fetchone()[0]
    grant._state.adding = False
    grant._state.db = db.alias


def update_pending_grant(grant: TokenGrant, names: tuple[str, ...]) -> bool:
    """Write the fields ``names`` of a PENDING grant; False if it is no longer PENDING."""
    db = default_connection()
    if not raw_writes_allowed(db):
        still_pending = TokenGrant.objects.filter(pk=grant.pk, outcome=Outcome.PENDING)
        return bool(still_pending.update(**{name: getattr(grant, name) for name in names}))
    statement, fields = sql.pending_grant_update(names)
    with preparing_cursor(db) as cursor:
        cursor.execute(statement, sql.pending_grant_update_values(grant, fields, db))
        return cursor.rowcount == 1


def raw_writes_allowed(db: BaseDatabaseWrapper) -> bool:
    """The hand-written statements stand in for ``save()`` only where nothing listens to it."""
    return db.features.can_return_columns_from_insert and not grant_save_listened()


def grant_save_listened() -> bool:
    return any(signal.has_listeners(TokenGrant) for signal in (signals.pre_save, signals.post_save))
