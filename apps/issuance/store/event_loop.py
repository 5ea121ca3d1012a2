"""The store that runs issuance's every-request statements on the event loop itself.

PostgreSQL with Redis quotas only: both have asyncio clients (psycopg's, redis-py's). No
thread hop, and no thread waiting for the GIL behind a busy loop, stands between a request
and its statements (docs/adr/0002-issuance-on-the-event-loop.md). The rare steps (a policy
cache miss, a refusal decided before anything was written, a failed mint's bookkeeping)
stay in issuance's database threads, as in ``ThreadedStore``.
"""

import asyncio
from datetime import datetime

from django.utils import timezone

from apps.audit.models import TokenGrant
from apps.clients.keys import parse_key, usable_key
from apps.clients.models import ClientKey
from apps.issuance import rules
from apps.issuance.quotas import (
    QuotaBackendUnavailable,
    QuotaDenied,
    quota_engine,
    redis_reservation,
)
from apps.issuance.rules import Approved, PendingGrant
from apps.issuance.store import sql
from apps.issuance.store.connections import async_preparing_cursor
from apps.issuance.store.threaded import ThreadedStore, grant_save_listened, in_db_thread


class EventLoopStore(ThreadedStore):
    async def client_key(self, raw_key: str) -> ClientKey | None:
        parsed = parse_key(raw_key)
        key = None
        if parsed is not None:
            async with async_preparing_cursor() as cursor:
                lookup = sql.key_lookup(cursor.db)
                await cursor.execute(lookup.sql, [parsed.prefix])
                key = sql.key_from_row(await cursor.fetchone(), lookup, cursor.db)
        return usable_key(parsed, key, timezone.now())

    async def record_refusal(self, grant: TokenGrant) -> bool:
        if grant.pk is None or grant_save_listened():
            return await super().record_refusal(grant)
        return await _update_pending_grant(grant, rules.REFUSED_FIELDS)

    def _start_reserving(self, approved: Approved, now: datetime):
        if grant_save_listened():
            return super()._start_reserving(approved, now)
        return asyncio.ensure_future(_reserve_and_record(approved, now)), lambda: False

    async def record_issued(self, grant: TokenGrant) -> bool:
        if grant_save_listened():
            return await super().record_issued(grant)
        return await _update_pending_grant(grant, rules.ISSUED_FIELDS)

    def _write_key_use(self, prefix: str, app_id: int, at: datetime, cutoff: datetime):
        return asyncio.ensure_future(_write_key_use(prefix, app_id, at, cutoff))


async def _reserve_and_record(approved: Approved, now: datetime) -> PendingGrant:
    """The quota reservation and the PENDING row at once: one round trip's wait, not two.

    The row names its reservation before the script runs (its keys are known up front), and
    giving back a reservation that was never taken gives back nothing, so a crash between
    the two leaves reap_pending nothing to miscount. A row that cannot be written gives back
    what was taken; a refusal leaves the row PENDING for ``record_refusal``.
    """
    grant = approved.grant
    expected = redis_reservation(approved.limits, approved.cap, grant.public_id)
    grant.quota_reservation = expected.as_json()
    reserving = asyncio.ensure_future(
        quota_engine().reserve_async(
            approved.limits, approved.cap, grant.public_id, grant.expire_time, now
        )
    )
    try:
        await _insert_grant(grant)
    except BaseException:
        await _give_back(reserving)
        raise
    reservation = await reserving
    return PendingGrant(grant, approved.profile, reservation, approved.api_key)


async def _give_back(reserving: asyncio.Future) -> None:
    """A reservation whose row could not be written, given back once the script has answered."""
    try:
        reservation = await reserving
    except (QuotaDenied, QuotaBackendUnavailable):
        return
    await in_db_thread(quota_engine().refund, reservation)


async def _insert_grant(grant: TokenGrant) -> None:
    statement, fields = sql.grant_insert()
    async with async_preparing_cursor() as cursor:
        await cursor.execute(statement, sql.grant_insert_values(grant, fields, cursor.db))
        grant.pk = (await cursor.fetchone())[0]
    grant._state.adding = False
    grant._state.db = cursor.db.alias


async def _update_pending_grant(grant: TokenGrant, names: tuple[str, ...]) -> bool:
    """Write the fields ``names`` of a PENDING grant; False if it is no longer PENDING."""
    statement, fields = sql.pending_grant_update(names)
    async with async_preparing_cursor() as cursor:
        await cursor.execute(statement, sql.pending_grant_update_values(grant, fields, cursor.db))
        return cursor.rowcount == 1


async def _write_key_use(prefix: str, app_id: int, at: datetime, cutoff: datetime) -> None:
    """The key's stamp, then its app's: each its own autocommit UPDATE, on the loop."""
    key_update, app_update = sql.key_use_updates()
    async with async_preparing_cursor() as cursor:
        key_values, app_values = sql.key_use_values(prefix, app_id, at, cutoff, cursor.db)
        await cursor.execute(key_update, key_values)
        await cursor.execute(app_update, app_values)
