"""The quota engine: every limit that applies to one issuance, checked and taken at once.

Limits are fixed windows (aligned to the minute, hour or UTC day) plus the organisation's cap
on tokens alive at the same time. ``reserve`` takes one unit from every limit or from none
and names the most restrictive one it hit; ``refund`` gives a reservation back when Google
fails. Two engines share this contract: Redis (one Lua script, when ``REDIS_URL`` is set) and
the database (the embedded default), both exact under concurrency.
"""

import hashlib
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Protocol

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import F
from django.utils import timezone

from apps.issuance.models import ActiveTokenSlot, QuotaCounter
from apps.issuance.store.connections import PerLoop
from apps.issuance.store.sql import quota_counter_statements
from apps.policies.models import Quota


@dataclass(frozen=True)
class Limit:
    """One window of one limit. ``key`` names the counter for this window only."""

    key: str
    name: str
    limit: int
    window_seconds: int
    window_end: float  # epoch seconds


@dataclass(frozen=True)
class ActiveCap:
    key: str
    organization_id: int
    limit: int


@dataclass(frozen=True)
class Reservation:
    """What a reserve took, kept on the grant so a refund gives back exactly that."""

    counter_keys: list[str]
    active_key: str | None
    organization_id: int
    slot: str

    def as_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Reservation":
        return cls(**data)


class QuotaDenied(Exception):
    def __init__(self, name: str, limit: int, window_seconds: int | None, retry_after: int):
        super().__init__(f"Quota exceeded: {name}")
        self.name = name
        self.limit = limit
        self.window_seconds = window_seconds
        self.retry_after = retry_after


class QuotaBackendUnavailable(Exception):
    """The quota store cannot be reached: issuance fails closed."""


WINDOW_LABELS = {60: "minute", 3600: "hour", 86400: "day"}


def _window(now: datetime, seconds: int) -> tuple[int, float]:
    epoch = now.timestamp()
    start = int(epoch // seconds * seconds)
    return start, float(start + seconds)


def applicable_limits(
    *,
    organization,
    client_app_id: int | None,
    profile_id: int,
    end_user: str,
    quotas: Iterable[Quota],
    now: datetime,
) -> list[Limit]:
    """The windows this request counts against: the org's quotas that match it, plus the plan."""
    limits = []
    for quota in quotas:
        if quota.scope == Quota.Scope.CLIENT_APP and quota.client_app_id != client_app_id:
            continue
        if quota.scope == Quota.Scope.PROFILE and quota.profile_id != profile_id:
            continue
        if quota.scope == Quota.Scope.END_USER:
            if not end_user:
                continue
            if quota.client_app_id and quota.client_app_id != client_app_id:
                continue
            if quota.profile_id and quota.profile_id != profile_id:
                continue
        seconds = Quota.WINDOW_SECONDS[quota.window]
        start, end = _window(now, seconds)
        subject = _digest(end_user) if quota.scope == Quota.Scope.END_USER else ""
        limits.append(
            Limit(
                key=_counter_key(organization.pk, quota.pk, subject, start),
                name=(
                    f"{quota.get_scope_display().lower()} quota "
                    f"{quota.limit} {quota.get_window_display()}"
                ),
                limit=quota.limit,
                window_seconds=seconds,
                window_end=end,
            )
        )
    start, end = _window(now, 86400)
    limits.append(
        Limit(
            key=f"plan:{organization.pk}:day:{start}",
            name=f"plan: max {organization.max_tokens_per_day} tokens per day",
            limit=organization.max_tokens_per_day,
            window_seconds=86400,
            window_end=end,
        )
    )
    return limits


def _counter_key(organization_id: int, quota_id: int, subject: str, start: int) -> str:
    """The counter of one quota's window (per end user: ``subject``, a digest), both engines."""
    return f"q:{organization_id}:{quota_id}{f':{subject}' if subject else ''}:{start}"


def _digest(end_user: str) -> str:
    """End-user ids are opaque and unbounded; keys hold a short digest of them."""
    return hashlib.sha256(end_user.encode()).hexdigest()[:24]


def active_cap_for(organization) -> ActiveCap:
    return ActiveCap(
        key=f"active:{organization.pk}",
        organization_id=organization.pk,
        limit=organization.max_active_tokens,
    )


def _most_restrictive(failed: list[Limit | ActiveCap], now: datetime) -> QuotaDenied:
    """Of the limits hit, the one that keeps the caller waiting longest."""

    def wait(item) -> int:
        if isinstance(item, Limit):
            return max(1, math.ceil(item.window_end - now.timestamp()))
        return 60  # a slot frees when some token expires: ask again in a minute

    worst = max(failed, key=lambda item: (wait(item), -item.limit))
    if isinstance(worst, Limit):
        return QuotaDenied(worst.name, worst.limit, worst.window_seconds, wait(worst))
    return QuotaDenied(f"plan: max {worst.limit} active tokens", worst.limit, None, wait(worst))


class QuotaEngine(Protocol):
    def reserve(
        self,
        limits: list[Limit],
        cap: ActiveCap,
        slot: str,
        slot_expires_at: datetime,
        now: datetime,
    ) -> Reservation: ...

    def refund(self, reservation: Reservation) -> None: ...

    def counts(self, keys: list[str]) -> dict[str, int]:
        """The current value of these counters (absent: 0), read without changing them."""
        ...


class DatabaseQuotaEngine:
    """Counters in the database: one conditional upsert per limit, inside one transaction.

    The organisation's live-token counter row is written first, so every reservation of one
    organisation queues on that row lock (PostgreSQL) or on the database write lock (SQLite,
    IMMEDIATE); the checks and increments that follow cannot interleave. That row counts the
    organisation's slots, so the active-token cap costs O(1) however many tokens are alive:
    each reservation first deletes the organisation's expired slots (an index range over
    those only) and takes them off the count, as the Redis engine's sorted set does. Its
    statements are hand-written (apps/issuance/store/sql.py): this runs on every issuance.
    """

    def reserve(self, limits, cap, slot, slot_expires_at, now) -> Reservation:
        try:
            self._take(limits, cap, slot, slot_expires_at, now)
        except DatabaseError as error:  # the quota store is the database: fail closed
            raise QuotaBackendUnavailable(type(error).__name__) from None
        return Reservation(
            sorted(limit.key for limit in limits), cap.key, cap.organization_id, str(slot)
        )

    def _take(self, limits, cap, slot, slot_expires_at, now) -> None:
        sql = quota_counter_statements()
        adapt = connection.ops.adapt_datetimefield_value
        slot_value = ActiveTokenSlot._meta.get_field("grant_public_id").get_db_prep_value(
            slot, connection
        )
        live_key = _live_key(cap.organization_id)
        failed: list[Limit | ActiveCap] = []
        with transaction.atomic(), connection.cursor() as cursor:
            # Touching the organisation's live counter first takes its lock.
            cursor.execute(sql.lock_live, [live_key])
            row = cursor.fetchone()
            if row is None:  # first reservation of this organisation (or since an upgrade)
                cursor.execute(sql.init_live, [live_key, adapt(_at(2**31)), cap.organization_id])
                row = cursor.fetchone()
            cursor.execute(sql.purge_slots, [cap.organization_id, adapt(now)])
            live = max(0, row[0] - max(0, cursor.rowcount))
            for limit in sorted(limits, key=lambda item: item.key):
                cursor.execute(
                    sql.upsert, [limit.key, 1, adapt(_at(limit.window_end)), 1, limit.limit]
                )
                taken = cursor.fetchone()
                if taken is None or limit.limit < 1:
                    failed.append(limit)
            if live + 1 > cap.limit:
                failed.append(cap)
            if failed:
                raise _most_restrictive(failed, now)  # rolls back the increments above
            cursor.execute(sql.set_live, [live + 1, live_key])
            cursor.execute(
                sql.insert_slot, [cap.organization_id, slot_value, adapt(slot_expires_at)]
            )

    def refund(self, reservation: Reservation) -> None:
        """Give back what ``reserve`` took, once: the slot is the proof it is still out.

        Locks in reserve's order (the org's live counter row, then keys sorted) so the two
        cannot deadlock on PostgreSQL. A slot that expired meanwhile was already counted out
        by a later reservation, so there is nothing left to give back (as with Redis).
        """
        live = QuotaCounter.objects.filter(key=_live_key(reservation.organization_id))
        with transaction.atomic():
            live.update(count=F("count"))
            removed, _ = ActiveTokenSlot.objects.filter(grant_public_id=reservation.slot).delete()
            if not removed:
                return
            live.filter(count__gt=0).update(count=F("count") - 1)
            for key in sorted(reservation.counter_keys):
                QuotaCounter.objects.filter(key=key, count__gt=0).update(count=F("count") - 1)

    def counts(self, keys: list[str]) -> dict[str, int]:
        try:
            return dict(QuotaCounter.objects.filter(key__in=keys).values_list("key", "count"))
        except DatabaseError as error:
            raise QuotaBackendUnavailable(type(error).__name__) from None


def _live_key(organization_id: int) -> str:
    """The database engine's count of an organisation's slots (the cap's row and lock)."""
    return f"slots:{organization_id}"


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


_RESERVE_SCRIPT = """
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local failed = {}
for i = 1, n do
  local current = tonumber(redis.call('GET', KEYS[i]) or '0')
  if current + 1 > tonumber(ARGV[2 + i]) then table.insert(failed, i) end
end
local active_key = KEYS[n + 1]
local cap = tonumber(ARGV[3 + 2 * n])
redis.call('ZREMRANGEBYSCORE', active_key, '-inf', now)
if redis.call('ZCARD', active_key) + 1 > cap then table.insert(failed, n + 1) end
if #failed > 0 then return failed end
for i = 1, n do
  if redis.call('INCR', KEYS[i]) == 1 then
    redis.call('EXPIREAT', KEYS[i], tonumber(ARGV[2 + n + i]) + 60)
  end
end
redis.call('ZADD', active_key, tonumber(ARGV[5 + 2 * n]), ARGV[4 + 2 * n])
return {}
"""

_REFUND_SCRIPT = """
local n = tonumber(ARGV[1])
if redis.call('ZREM', KEYS[n + 1], ARGV[2]) == 0 then return 0 end
for i = 1, n do
  local current = tonumber(redis.call('GET', KEYS[i]) or '0')
  if current > 0 then redis.call('DECR', KEYS[i]) end
end
return 1
"""


# Connections to Redis per event loop: each reserve holds one for a single round trip.
ASYNC_REDIS_CONNECTIONS = 32


class RedisQuotaEngine:
    """Every limit and the active-token set checked and taken by one Lua script: all or none.

    ``reserve_async`` runs the same reserve script from the event loop, on a client of that
    loop's own; refunds (a failed call, rare) stay synchronous.
    """

    def __init__(self, url: str):
        import redis
        import redis.asyncio
        from redis.commands.core import AsyncScript

        options = {"socket_timeout": 2, "socket_connect_timeout": 2}
        self._redis_errors = (redis.RedisError, OSError)
        self.client = redis.Redis.from_url(url, **options)
        self._reserve = self.client.register_script(_RESERVE_SCRIPT)
        self._refund = self.client.register_script(_REFUND_SCRIPT)
        # redis.asyncio's default pool refuses a command once 100 are in flight; this one
        # waits for a free connection, up to the same 2 s as any other Redis trouble.
        self._async_clients = PerLoop(
            lambda: redis.asyncio.Redis(
                connection_pool=redis.asyncio.BlockingConnectionPool.from_url(
                    url, max_connections=ASYNC_REDIS_CONNECTIONS, timeout=2, **options
                )
            ),
            lambda client: client.aclose(close_connection_pool=True),
        )
        # Run with each loop's own client (``client=``); bound to none.
        self._reserve_async = AsyncScript(self.client, _RESERVE_SCRIPT)

    def reserve(self, limits, cap, slot, slot_expires_at, now) -> Reservation:
        keys, args = _reserve_call(limits, cap, slot, slot_expires_at, now)
        try:
            failed = self._reserve(keys=keys, args=args)
        except self._redis_errors as error:
            raise QuotaBackendUnavailable(str(error)) from None
        return _reserved(failed, limits, cap, slot, now)

    async def reserve_async(self, limits, cap, slot, slot_expires_at, now) -> Reservation:
        keys, args = _reserve_call(limits, cap, slot, slot_expires_at, now)
        try:
            client = await self._async_clients.get()
            failed = await self._reserve_async(keys=keys, args=args, client=client)
        except self._redis_errors as error:
            raise QuotaBackendUnavailable(str(error)) from None
        return _reserved(failed, limits, cap, slot, now)

    def refund(self, reservation: Reservation) -> None:
        keys = [*reservation.counter_keys, reservation.active_key]
        try:
            self._refund(keys=keys, args=[len(reservation.counter_keys), reservation.slot])
        except self._redis_errors as error:
            raise QuotaBackendUnavailable(str(error)) from None

    def counts(self, keys: list[str]) -> dict[str, int]:
        try:
            values = self.client.mget(keys)
        except self._redis_errors as error:
            raise QuotaBackendUnavailable(str(error)) from None
        return {key: int(value) for key, value in zip(keys, values, strict=True) if value}


def _reserve_call(limits, cap, slot, slot_expires_at, now) -> tuple[list, list]:
    keys = [limit.key for limit in limits] + [cap.key]
    args = [
        now.timestamp(),
        len(limits),
        *[limit.limit for limit in limits],
        *[int(limit.window_end) for limit in limits],
        cap.limit,
        str(slot),
        slot_expires_at.timestamp(),
    ]
    return keys, args


def _reserved(failed: list[int], limits, cap, slot, now) -> Reservation:
    """The reserve script's answer: the reservation, or the most restrictive limit it hit."""
    if failed:
        hit = [limits[i - 1] if i <= len(limits) else cap for i in failed]
        raise _most_restrictive(hit, now)
    return redis_reservation(limits, cap, slot)


def redis_reservation(limits: list[Limit], cap: ActiveCap, slot) -> Reservation:
    """What the Redis engine's reserve takes, known before it runs.

    Refunding it when the script did not take it (refused, or never ran) gives back nothing:
    the refund script decrements only while the slot it removes was there.
    """
    return Reservation([limit.key for limit in limits], cap.key, cap.organization_id, str(slot))


@cache
def _engine_for(redis_url: str) -> QuotaEngine:
    return RedisQuotaEngine(redis_url) if redis_url else DatabaseQuotaEngine()


def quota_engine() -> QuotaEngine:
    return _engine_for(settings.REDIS_URL)


def slot_expiry(now: datetime, expire_seconds: int) -> datetime:
    return now + timedelta(seconds=expire_seconds)


def quota_counters_prune(*, now: datetime, batch: int) -> int:
    """Delete the database engine's counters of windows that have ended; returns how many.

    A window's counter is never read after its end (the next window has its own key), but
    nothing else removes it: per-end-user minute windows alone would grow without bound.
    Live-token counters carry a far-future end and stay. Batched, like every upkeep task.
    """
    removed = 0
    while ids := list(
        QuotaCounter.objects.filter(expires_at__lt=now).values_list("pk", flat=True)[:batch]
    ):
        removed += QuotaCounter.objects.filter(pk__in=ids, expires_at__lt=now).delete()[0]
    return removed


# --- what an admin sees of a quota: its current window's count, as the engine holds it ------


def quota_usages(quotas: Iterable[Quota], *, now: datetime | None = None) -> dict[int, int | None]:
    """Each quota's count in its current window, read from the active engine's own counters
    (the keys ``reserve`` increments), in one read. None for a per-end-user quota: each end
    user has a counter of their own and there is no one total. Raises
    ``QuotaBackendUnavailable`` when the engine cannot be read."""
    now = now or timezone.now()
    quotas = [quota for quota in quotas if quota.pk is not None]
    keys = {
        quota.pk: _counter_key(
            quota.organization_id,
            quota.pk,
            "",
            _window(now, Quota.WINDOW_SECONDS[quota.window])[0],
        )
        for quota in quotas
        if quota.scope != Quota.Scope.END_USER
    }
    counts = quota_engine().counts(list(keys.values())) if keys else {}
    return {
        quota.pk: counts.get(keys[quota.pk], 0) if quota.pk in keys else None for quota in quotas
    }


def quota_usage(quota: Quota, *, now: datetime | None = None) -> int | None:
    """One quota's count in its current window (see ``quota_usages``)."""
    return quota_usages([quota], now=now)[quota.pk]


def quota_usage_texts(quotas: Iterable[Quota], *, now: datetime | None = None) -> dict[int, str]:
    """What each quota's row says of its current window: "37 of 50 this minute"."""
    quotas = [quota for quota in quotas if quota.pk is not None]
    try:
        usages = quota_usages(quotas, now=now)
    except QuotaBackendUnavailable:
        return {quota.pk: "unknown: the quota store is unreachable" for quota in quotas}
    texts = {}
    for quota in quotas:
        window = {Quota.Window.DAY: "today (UTC)"}.get(quota.window, f"this {quota.window}")
        used = usages[quota.pk]
        if used is None:
            texts[quota.pk] = f"counted per end user: {quota.limit} each {window}"
        else:
            texts[quota.pk] = f"{used} of {quota.limit} {window}"
    return texts


def quota_usage_text(quota: Quota | None) -> str:
    """``quota_usage_texts`` for one row of a form (an unsaved row has no usage yet)."""
    if quota is None or quota.pk is None:
        return "—"
    return quota_usage_texts([quota])[quota.pk]
