"""The issuance path: decide, reserve, record, ask Google, record again
(docs/architecture.md, "One token request").

``token_issue`` is async so that no worker thread waits while Google answers. On PostgreSQL
with Redis quotas, the statements every request runs (the key lookup, the reservation, the
PENDING row and its final update) run on the event loop itself (``issue_prepare_on_loop``);
elsewhere the work before and after the upstream call runs in two short synchronous steps
(``issue_prepare`` and the grant's final update), each one hop to ``run_sync``'s threads.
Other refusals and rare writes take the threads on both paths; on the event loop a quota
refusal is the PENDING row's own final update, as the reservation and the row run together.
"""

import asyncio
import contextvars
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, NoReturn

from django.conf import settings
from django.db import connection, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import signals
from django.utils import timezone

from apps.audit.models import TokenGrant
from apps.clients.models import ClientApp
from apps.issuance import gateway
from apps.issuance.policy_cache import (
    IssuancePolicy,
    cached_issuance_policy,
    issuance_policy_for,
)
from apps.issuance.quotas import (
    ActiveCap,
    DatabaseQuotaEngine,
    Limit,
    QuotaBackendUnavailable,
    QuotaDenied,
    RedisQuotaEngine,
    Reservation,
    active_cap_for,
    applicable_limits,
    quota_engine,
    redis_reservation,
)
from apps.policies.live_schema import locked_fields, token_config
from apps.policies.models import LiveConstraintProfile
from apps.tenants.models import GEMINI_MAX_WINDOW_SECONDS, Organization, User
from portal import metrics
from portal.crypto import SecretUnreadable, fingerprint_key, token_fingerprint
from portal.db import async_hot_cursor, default_connection, default_vendor, hot_cursor

Outcome = TokenGrant.Outcome
logger = logging.getLogger(__name__)
issuance_logger = logging.getLogger("ephemera.issuance")

# The threads issuance's database steps run in. Django's default for sync code under ASGI is
# a fresh thread per request (thread_sensitive), and with it a fresh connection: on SQLite
# that is a connect, a dozen function registrations and, on close, a WAL checkpoint, every
# request. A few long-lived threads keep their SQLite connection (opened lazily, closed if it
# errs); on PostgreSQL each step still hands its connection back to the pool. Every step is
# self-contained (its own transactions, nothing left open), so no request's state leaks into
# the next. Tests that issue tokens must therefore commit their data (transaction=True).
# SQLite has one writer at a time: one thread queues a process's steps on a cheap in-process
# queue instead of SQLite's busy handler, which sleeps for milliseconds between retries. On
# PostgreSQL, few: each step's Python needs the GIL back after every round trip, and the
# busier the event loop, the longer each wait (docs/adr/0010-issuance-database-threads.md).
_db_threads = ThreadPoolExecutor(
    max_workers=1 if connection.vendor == "sqlite" else max(1, settings.ISSUANCE_DB_THREADS),
    thread_name_prefix="issuance-db",
)


def _submit(function, *args, **kwargs) -> Future:
    """``function`` queued on issuance's database threads, in a copy of the caller's context."""
    return _db_threads.submit(contextvars.copy_context().run, function, *args, **kwargs)


def run_sync(function):
    """``function`` as a coroutine function that runs in issuance's database threads.

    A plain executor call in a copy of the caller's context: what ``sync_to_async`` does
    for ``thread_sensitive=False``, without its per-call bookkeeping
    (docs/adr/0010-issuance-database-threads.md). Nothing here calls back into async code.
    """

    @functools.wraps(function)
    async def in_db_thread(*args, **kwargs):
        return await asyncio.wrap_future(_submit(function, *args, **kwargs))

    return in_db_thread


class IssuanceError(Exception):
    """A refusal in the public contract's terms: a stable code, a status, a plain message."""

    def __init__(
        self,
        code: str,
        http_status: int,
        message: str,
        *,
        retry_after: int | None = None,
        extra: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.http_status = http_status
        self.message = message
        self.retry_after = retry_after
        self.extra = extra or {}


@dataclass(frozen=True)
class Caller:
    """Who asks: a client app (by key) or a signed-in member, always inside one organisation."""

    organization: Organization
    client_app: ClientApp | None = None
    client_key_prefix: str = ""
    member: User | None = None
    origin: str = ""  # the browser Origin a client app called from, if any
    request_id: str = ""
    ip: str | None = None
    user_agent: str = ""


@dataclass(frozen=True)
class TokenRequest:
    profile: str
    end_user: str = ""
    uses: int | None = None
    expire_seconds: int | None = None
    new_session_seconds: int | None = None

    def overrides(self) -> dict[str, int]:
        asked = {
            "uses": self.uses,
            "expire_seconds": self.expire_seconds,
            "new_session_seconds": self.new_session_seconds,
        }
        return {name: value for name, value in asked.items() if value is not None}


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expire_time: datetime
    new_session_expire_time: datetime
    uses: int
    profile: str
    model: str
    locked_fields: list[str]
    grant_id: str
    sandbox: bool


@dataclass
class _Prepared:
    grant: TokenGrant
    profile: LiveConstraintProfile
    reservation: Reservation
    api_key: str
    on_loop: bool = False  # admitted on the event loop: finished there too


@dataclass(frozen=True)
class Terms:
    uses: int
    expire_seconds: int
    new_session_seconds: int


def clamp_terms(
    organization: Organization, profile: LiveConstraintProfile, request: TokenRequest
) -> Terms:
    """Gemini's limits ≥ the plan ≥ the profile ≥ the request: a request may only ask less."""
    expire = min(profile.expire_seconds, organization.max_expire_seconds, GEMINI_MAX_WINDOW_SECONDS)
    new_session = min(profile.new_session_seconds, organization.max_new_session_seconds, expire)
    uses = profile.uses
    if uses == 0 and not organization.allow_unlimited_uses:
        uses = organization.max_uses  # the plan tightened after the profile was saved
    elif uses > 0:
        uses = min(uses, organization.max_uses)

    def ask(name: str, asked: int | None, allowed: int, minimum: int) -> int:
        if asked is None:
            return allowed
        if asked < minimum or (allowed and asked > allowed) or (allowed == 0 and asked < 0):
            bound = f"between {minimum} and {allowed}" if allowed else f"at least {minimum}"
            raise IssuanceError(
                "invalid_request",
                400,
                f"{name} must be {bound} for profile '{profile.slug}'.",
                extra={"field": name},
            )
        return asked

    uses = ask("uses", request.uses, uses, 0 if uses == 0 else 1)
    expire = ask("expire_seconds", request.expire_seconds, expire, 1)
    new_session = ask("new_session_seconds", request.new_session_seconds, new_session, 1)
    return Terms(uses=uses, expire_seconds=expire, new_session_seconds=min(new_session, expire))


def refusal_record(
    *,
    caller: Caller,
    error: IssuanceError,
    request: TokenRequest | None = None,
    profile: LiveConstraintProfile | None = None,
    outcome: str = Outcome.DENIED_POLICY,
) -> TokenGrant:
    """Every refused attempt inside a known organisation leaves a row, with its reason."""
    grant = TokenGrant.objects.create(
        **_grant_fields(caller, request, profile),
        outcome=outcome,
        error_code=error.code,
        detail=error.message[:500],
    )
    _observe_refusal(grant, error)
    return grant


def _observe_refusal(grant: TokenGrant, error: IssuanceError) -> None:
    if error.code == "quota_exceeded":
        metrics.QUOTA_DENIALS.labels(grant.organization.slug, error.extra["limit"]).inc()
    _observe(grant)


def _observe(grant: TokenGrant, *, upstream_ms: int | None = None) -> None:
    """An attempt's final outcome, counted and logged once (never the token or the key)."""
    organization = grant.organization.slug
    # Only a real profile names the series: a refused request may carry any string.
    profile = grant.profile_slug if grant.profile_id else ""
    metrics.TOKEN_ISSUANCES.labels(organization, grant.outcome, profile).inc()
    issuance_logger.info(
        "issuance",
        extra={
            "request_id": grant.request_id,
            "org": organization,
            "app": grant.client_app.name if grant.client_app_id else "",
            "member_id": grant.member_id,
            "profile": grant.profile_slug,
            "outcome": grant.outcome,
            "error_code": grant.error_code,
            "grant_id": str(grant.public_id),
            "total_ms": round((timezone.now() - grant.requested_at).total_seconds() * 1000, 1),
            "upstream_ms": upstream_ms,
        },
    )


class _Refused(Exception):
    """A decision to refuse, not yet recorded: whoever catches it writes the refusal row."""

    def __init__(self, outcome: str, error: IssuanceError, profile=None) -> None:
        super().__init__(error.message)
        self.outcome = outcome
        self.error = error
        self.profile = profile

    def row(self, request: TokenRequest) -> dict[str, Any]:
        """``refusal_record``'s arguments for this refusal, but the caller."""
        return {
            "error": self.error,
            "request": request,
            "profile": self.profile,
            "outcome": self.outcome,
        }


def _deny(caller: Caller, request: TokenRequest, refused: _Refused) -> NoReturn:
    refusal_record(caller=caller, **refused.row(request))
    raise refused.error


def _forbidden(message: str, profile=None) -> _Refused:
    return _Refused(Outcome.DENIED_POLICY, IssuanceError("forbidden", 403, message), profile)


def _grant_fields(caller: Caller, request: TokenRequest | None, profile) -> dict[str, Any]:
    return {
        "organization": caller.organization,
        "client_app": caller.client_app,
        "client_key_prefix": caller.client_key_prefix,
        "member": caller.member,
        "end_user": request.end_user if request else "",
        "profile": profile,
        "profile_slug": profile.slug if profile else (request.profile[:64] if request else ""),
        "profile_version": profile.version if profile else None,
        "requested": request.overrides() if request else {},
        "request_id": caller.request_id,
        "ip": caller.ip,
        "user_agent": caller.user_agent[:300],
    }


def _check_caller(caller: Caller) -> None:
    """A valid key of a disabled app or org, or a call from an origin the app did not list."""
    app = caller.client_app
    if not caller.organization.is_active:
        raise _forbidden("This organisation is disabled.")
    if app is not None and not app.is_active:
        raise _forbidden("This client app is disabled.")
    if app is not None and caller.origin and caller.origin not in app.allowed_origins:
        raise _forbidden(f"Origin {caller.origin} is not allowed for this app.")


def _policy(caller: Caller) -> IssuancePolicy:
    try:
        return issuance_policy_for(caller.organization)
    except SecretUnreadable:
        raise _Refused(
            Outcome.DENIED_POLICY,
            IssuanceError(
                "upstream_error",
                502,
                "The organisation's Gemini key cannot be decrypted with the configured keys.",
            ),
        ) from None


def _resolve_profile(
    caller: Caller, request: TokenRequest, policy: IssuancePolicy
) -> LiveConstraintProfile:
    profile = policy.profiles.get(request.profile)
    if profile is None:
        raise _Refused(
            Outcome.DENIED_POLICY,
            IssuanceError("profile_not_found", 404, f"No profile '{request.profile}'."),
        )
    if not profile.is_active:
        raise _forbidden(f"Profile '{profile.slug}' is disabled.", profile)
    if caller.client_app is not None:
        allowed = profile.pk in policy.app_profiles.get(caller.client_app.pk, ())
    else:
        allowed = profile.members_may_use
    if not allowed:
        who = "This app" if caller.client_app is not None else "Members"
        raise _forbidden(f"{who} may not use profile '{profile.slug}'.", profile)
    return profile


@dataclass
class _Admission:
    """What a request that passed every policy check will record and reserve."""

    grant: TokenGrant
    profile: LiveConstraintProfile
    limits: list[Limit]
    cap: ActiveCap
    api_key: str


def _admission(
    caller: Caller, request: TokenRequest, policy: IssuancePolicy, now: datetime
) -> _Admission:
    """Steps 2–4 without a write: resolve the profile, clamp the terms, name the limits."""
    fingerprint_key()  # fail before reserving, not after Google has minted a token
    profile = _resolve_profile(caller, request, policy)
    try:
        terms = clamp_terms(caller.organization, profile, request)
    except IssuanceError as error:
        raise _Refused(Outcome.DENIED_POLICY, error, profile) from None
    grant = TokenGrant(**_grant_fields(caller, request, profile), requested_at=now)
    grant.expire_time = now + timedelta(seconds=terms.expire_seconds)
    grant.new_session_expire_time = now + timedelta(seconds=terms.new_session_seconds)
    grant.uses = terms.uses
    limits = applicable_limits(
        organization=caller.organization,
        client_app_id=caller.client_app.pk if caller.client_app else None,
        profile_id=profile.pk,
        end_user=request.end_user,
        quotas=policy.quotas,
        now=now,
    )
    return _Admission(grant, profile, limits, active_cap_for(caller.organization), policy.api_key)


def _quota_refused(denied: QuotaDenied, profile: LiveConstraintProfile) -> _Refused:
    error = IssuanceError(
        "quota_exceeded",
        429,
        f"Quota exceeded: {denied.name}.",
        retry_after=denied.retry_after,
        extra={"limit": denied.name},
    )
    return _Refused(Outcome.DENIED_QUOTA, error, profile)


def _quota_backend_refused(profile: LiveConstraintProfile) -> _Refused:
    error = IssuanceError(
        "quota_backend_unavailable",
        503,
        "Quotas cannot be checked right now; no token was issued.",
        retry_after=5,
    )
    return _Refused(Outcome.DENIED_QUOTA, error, profile)


def issue_prepare(
    *, caller: Caller, request: TokenRequest, now: datetime | None = None
) -> _Prepared:
    """Steps 2–5, synchronously: resolve, clamp, reserve, and commit the PENDING grant.

    Raises IssuanceError (already audited) for a refusal. ``token_issue`` runs it in one hop;
    the API runs it in the same hop as authentication and parsing.
    """
    try:
        return _prepare_grant(caller, request, now or timezone.now())
    except _Refused as refused:
        _deny(caller, request, refused)
    finally:
        release_connection()


def _prepare_grant(caller: Caller, request: TokenRequest, now: datetime) -> _Prepared:
    _check_caller(caller)
    admission = _admission(caller, request, _policy(caller), now)
    grant = admission.grant
    engine = quota_engine()
    in_database = isinstance(engine, DatabaseQuotaEngine)
    try:
        # The database engine's counters and the PENDING row: one transaction, both or
        # neither. A Redis reservation lives outside the database, so there the row is a
        # single autocommit INSERT (one round trip, where BEGIN … COMMIT costs three) and the
        # reservation is given back if the row cannot be written.
        with transaction.atomic() if in_database else nullcontext():
            reservation = engine.reserve(
                admission.limits, admission.cap, grant.public_id, grant.expire_time, now
            )
            try:
                grant.quota_reservation = reservation.as_json()
                _grant_insert(grant)
            except Exception:
                if not in_database:
                    engine.refund(reservation)
                raise
    except QuotaDenied as denied:
        raise _quota_refused(denied, admission.profile) from None
    except QuotaBackendUnavailable:
        raise _quota_backend_refused(admission.profile) from None
    return _Prepared(grant, admission.profile, reservation, admission.api_key)


def issues_on_the_loop() -> bool:
    """Whether issuance's every-request statements run on the event loop (``*_on_loop``).

    They can where both stores have asyncio clients: PostgreSQL and the Redis quota engine.
    Then no thread hop, and no thread waiting for the GIL, stands between a request and its
    statements. SQLite, the database quota engine and anything listening to the grant's
    save signals keep the synchronous path in issuance's database threads.
    """
    return (
        settings.ISSUANCE_ON_EVENT_LOOP
        and default_vendor() == "postgresql"
        and isinstance(quota_engine(), RedisQuotaEngine)
        and not _grant_save_listened()
    )


async def issue_prepare_on_loop(*, caller: Caller, request: TokenRequest) -> _Prepared:
    """``issue_prepare`` on the event loop (``issues_on_the_loop()``); a policy-cache miss
    and a policy refusal's row, both rare, go to issuance's database threads.

    A caller cancelled (the client hung up) before its quota is taken costs nothing more;
    from then on the reservation and the PENDING row are taken to the end, as in
    ``run_admission``, and then finished as ABANDONED.
    """
    now = timezone.now()
    try:
        _check_caller(caller)
        policy = cached_issuance_policy(caller.organization) or await _policy_in_thread(caller)
        admission = _admission(caller, request, policy, now)
    except _Refused as refused:
        await _deny_on_loop(caller, request, refused)
    taking = asyncio.ensure_future(_reserve_and_record(admission, now))
    try:
        return await asyncio.shield(taking)
    except asyncio.CancelledError:
        taking.add_done_callback(_abandon_admitted)
        raise


async def _reserve_and_record(admission: _Admission, now: datetime) -> _Prepared:
    """The quota reservation and the PENDING row at once: one round trip's wait, not two.

    The row names its reservation before the script runs (its keys are known up front), and
    giving back a reservation that was never taken gives back nothing, so a crash between
    the two leaves reap_pending nothing to miscount. A refusal becomes the row's outcome; a
    row that cannot be written gives back what was taken.
    """
    grant, profile = admission.grant, admission.profile
    expected = redis_reservation(admission.limits, admission.cap, grant.public_id)
    grant.quota_reservation = expected.as_json()
    reserving = asyncio.ensure_future(
        quota_engine().reserve_async(
            admission.limits, admission.cap, grant.public_id, grant.expire_time, now
        )
    )
    try:
        await _grant_insert_async(grant)
    except BaseException:
        await _give_back(reserving)
        raise
    try:
        reservation = await reserving
    except QuotaDenied as denied:
        await _refuse_pending(grant, _quota_refused(denied, profile))
    except QuotaBackendUnavailable:
        await _refuse_pending(grant, _quota_backend_refused(profile))
    return _Prepared(grant, profile, reservation, admission.api_key, on_loop=True)


async def _give_back(reserving: asyncio.Future) -> None:
    """A reservation whose row could not be written, given back once the script has answered."""
    try:
        reservation = await reserving
    except (QuotaDenied, QuotaBackendUnavailable):
        return
    await _refund_async(reservation)


async def _refuse_pending(grant: TokenGrant, refused: _Refused) -> NoReturn:
    """A refusal decided after the PENDING row was written: the row becomes the refusal, as
    ``refusal_record`` would have written it (no terms, no reservation)."""
    error = refused.error
    grant.outcome, grant.error_code, grant.detail = refused.outcome, error.code, error.message[:500]
    grant.quota_reservation = grant.expire_time = grant.new_session_expire_time = None
    grant.uses = None
    if await _grant_update_pending_async(grant, _REFUSED_FIELDS):
        _observe_refusal(grant, error)
    raise error


async def _deny_on_loop(caller: Caller, request: TokenRequest, refused: _Refused) -> NoReturn:
    await refusal_record_in_thread(caller=caller, **refused.row(request))
    raise refused.error


@run_sync
def refusal_record_in_thread(**kwargs) -> None:
    """``refusal_record`` from the event loop, in issuance's database threads."""
    try:
        refusal_record(**kwargs)
    finally:
        release_connection()


@run_sync
def _policy_in_thread(caller: Caller) -> IssuancePolicy:
    try:
        return _policy(caller)
    finally:
        release_connection()


@run_sync
def _refund_async(reservation: Reservation) -> None:
    quota_engine().refund(reservation)


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


_ISSUED_FIELDS = (
    "outcome",
    "issued_at",
    "lifecycle",
    "request_body",
    "upstream_latency_ms",
    "token_fingerprint",
)


_REFUSED_FIELDS = (
    "outcome",
    "error_code",
    "detail",
    "quota_reservation",
    "expire_time",
    "new_session_expire_time",
    "uses",
)


@cache
def _grant_insert_sql() -> tuple[str, tuple]:
    """An INSERT of every column, built from the model: what ``save()`` would send, without
    the per-call SQL compilation (this runs on every issuance). Identifiers come from the
    model; values are parameters."""
    quote = connection.ops.quote_name
    meta = TokenGrant._meta
    inserted = tuple(field for field in meta.concrete_fields if not field.primary_key)
    insert = (
        f"INSERT INTO {quote(meta.db_table)} "  # noqa: S608
        f"({', '.join(quote(field.column) for field in inserted)}) "
        f"VALUES ({', '.join(['%s'] * len(inserted))}) RETURNING {quote(meta.pk.column)}"
    )
    return insert, inserted


@cache
def _pending_update_sql(names: tuple[str, ...]) -> tuple[str, tuple]:
    """An UPDATE of the fields ``names`` on one grant, only while it is still PENDING: one
    the reaper has given up on (and maybe sealed) stays as the reaper left it."""
    quote = connection.ops.quote_name
    meta = TokenGrant._meta
    updated = tuple(meta.get_field(name) for name in names)
    update = (
        f"UPDATE {quote(meta.db_table)} "  # noqa: S608
        f"SET {', '.join(f'{quote(field.column)} = %s' for field in updated)} "
        f"WHERE {quote(meta.pk.column)} = %s AND {quote(meta.get_field('outcome').column)} = %s"
    )
    return update, updated


def _raw_writes_allowed(db: BaseDatabaseWrapper) -> bool:
    """The raw statements stand in for ``save()`` only where nothing listens to it."""
    return db.features.can_return_columns_from_insert and not _grant_save_listened()


def _grant_save_listened() -> bool:
    return any(signal.has_listeners(TokenGrant) for signal in (signals.pre_save, signals.post_save))


def _grant_insert(grant: TokenGrant) -> None:
    db = default_connection()
    if not _raw_writes_allowed(db):
        grant.save(force_insert=True)
        return
    sql, fields = _grant_insert_sql()
    values = [field.get_db_prep_save(field.pre_save(grant, True), db) for field in fields]
    with hot_cursor(db) as cursor:
        cursor.execute(sql, values)
        grant.pk = cursor.fetchone()[0]
    grant._state.adding = False
    grant._state.db = db.alias


async def _grant_insert_async(grant: TokenGrant) -> None:
    sql, fields = _grant_insert_sql()
    async with async_hot_cursor() as cursor:
        values = [
            field.get_db_prep_save(field.pre_save(grant, True), cursor.db) for field in fields
        ]
        await cursor.execute(sql, values)
        grant.pk = (await cursor.fetchone())[0]
    grant._state.adding = False
    grant._state.db = cursor.db.alias


def _grant_update_issued(grant: TokenGrant) -> bool:
    """Record the token on the PENDING grant; False if the grant is no longer PENDING."""
    db = default_connection()
    if not _raw_writes_allowed(db):
        return bool(
            TokenGrant.objects.filter(pk=grant.pk, outcome=Outcome.PENDING).update(
                **{name: getattr(grant, name) for name in _ISSUED_FIELDS}
            )
        )
    sql, fields = _pending_update_sql(_ISSUED_FIELDS)
    values = [field.get_db_prep_save(getattr(grant, field.attname), db) for field in fields]
    with hot_cursor(db) as cursor:
        cursor.execute(sql, [*values, grant.pk, Outcome.PENDING])
        return cursor.rowcount == 1


async def _grant_update_pending_async(grant: TokenGrant, names: tuple[str, ...]) -> bool:
    """Write the fields ``names`` of a PENDING grant; False if it is no longer PENDING."""
    sql, fields = _pending_update_sql(names)
    async with async_hot_cursor() as cursor:
        values = [
            field.get_db_prep_save(getattr(grant, field.attname), cursor.db) for field in fields
        ]
        await cursor.execute(sql, [*values, grant.pk, Outcome.PENDING])
        return cursor.rowcount == 1


def _record_issued(prepared: _Prepared, minted: gateway.MintedToken) -> TokenGrant:
    grant = prepared.grant
    grant.outcome = Outcome.ISSUED
    grant.issued_at = timezone.now()
    grant.lifecycle = TokenGrant.Lifecycle.ACTIVE
    grant.request_body = minted.request_body
    grant.upstream_latency_ms = minted.latency_ms
    grant.token_fingerprint = token_fingerprint(minted.name)
    return grant


def _issued_recorded(grant: TokenGrant, recorded: bool, minted: gateway.MintedToken) -> None:
    if not recorded:
        # reap_pending gave this grant up (twice the upstream timeout passed): its row says
        # ABANDONED and may be sealed, so the token must not leave without a record.
        raise gateway.UpstreamError(
            "upstream_timeout", 504, "Google answered too late; no token was issued."
        )
    _observe(grant, upstream_ms=minted.latency_ms)


def _finish_issued(prepared: _Prepared, minted: gateway.MintedToken) -> None:
    grant = _record_issued(prepared, minted)
    try:
        recorded = _grant_update_issued(grant)
    finally:
        release_connection()
    _issued_recorded(grant, recorded, minted)


async def _finish_issued_on_loop(prepared: _Prepared, minted: gateway.MintedToken) -> None:
    grant = _record_issued(prepared, minted)
    _issued_recorded(grant, await _grant_update_pending_async(grant, _ISSUED_FIELDS), minted)


def _finish_failed(prepared: _Prepared, error_code: str, detail: str) -> None:
    """Step 7 on failure: the reservation goes back and the grant says why, together.

    If the quota store is down too, the reservation stays on the grant and its windows run
    out on their own; the grant still records the failure. A refund happens once only.
    """
    grant = prepared.grant
    grant.outcome = Outcome.ABANDONED if error_code == "abandoned" else Outcome.UPSTREAM_ERROR
    grant.error_code = error_code
    grant.detail = detail[:500]
    still_pending = TokenGrant.objects.filter(pk=grant.pk, outcome=Outcome.PENDING)
    outcome = {"outcome": grant.outcome, "error_code": error_code, "detail": grant.detail}
    try:
        with transaction.atomic():
            quota_engine().refund(prepared.reservation)
            grant.quota_reservation = None
            recorded = still_pending.update(**outcome, quota_reservation=None)
    except QuotaBackendUnavailable:
        logger.warning("quota refund failed for grant %s; it will lapse", grant.public_id)
        recorded = still_pending.update(**outcome)
    finally:
        release_connection()
    if recorded:  # otherwise the reaper recorded it (ABANDONED) and refunded it first
        _observe(grant)


# Wrapped once: building the wrapper per call costs more than the call's own bookkeeping.
_finish_issued_async = run_sync(_finish_issued)
_finish_failed_async = run_sync(_finish_failed)


async def _finish_abandoned(prepared: _Prepared, cause: str) -> None:
    """The request ended (``cause``: what ended it) before a token was issued."""
    detail = f"The request ended before a token was issued. ({cause})"
    await _finish_failed_async(prepared, "abandoned", detail)


_abandoning: set[asyncio.Task] = set()  # strong references until each finishes


def run_admission(function: Callable[..., _Prepared]):
    """``run_sync`` for the step that commits a PENDING grant and its quota reservation.

    If the caller is cancelled (the client hung up) before the step starts, it never runs. A
    running thread cannot be stopped: its grant is then finished as ABANDONED and its quota
    given back as soon as the step is done, not held until ``reap_pending`` gives up on it
    (twice the upstream timeout later).
    """

    @functools.wraps(function)
    async def admit(*args, **kwargs) -> _Prepared:
        step = _submit(function, *args, **kwargs)
        waiting = asyncio.wrap_future(step)
        try:
            return await asyncio.shield(waiting)
        except asyncio.CancelledError:
            if not step.cancel():  # already running: it will commit its grant
                waiting.add_done_callback(_abandon_admitted)
            raise

    return admit


def _abandon_admitted(step: asyncio.Future) -> None:
    if step.cancelled() or step.exception() is not None:  # nothing committed, or refused
        return
    finishing = asyncio.ensure_future(_abandon(step.result()))
    _abandoning.add(finishing)
    finishing.add_done_callback(_abandoning.discard)


async def _abandon(prepared: _Prepared) -> None:
    try:
        await _finish_abandoned(prepared, "CancelledError")
    except Exception:  # the database is down too: reap_pending will record it later
        logger.exception("could not record abandoned grant %s", prepared.grant.public_id)


_issue_prepare_async = run_admission(issue_prepare)


async def token_issue(*, caller: Caller, request: TokenRequest) -> IssuedToken:
    if issues_on_the_loop():
        prepared = await issue_prepare_on_loop(caller=caller, request=request)
    else:
        prepared = await _issue_prepare_async(caller=caller, request=request)
    return await issue_complete(prepared)


async def issue_complete(prepared: _Prepared) -> IssuedToken:
    """Steps 6–8 for a grant ``issue_prepare`` committed: ask Google, then record the outcome."""
    grant, profile = prepared.grant, prepared.profile
    try:
        if not prepared.api_key:
            raise gateway.UpstreamError("upstream_error", 502, "No Gemini API key is configured.")
        create_config = token_config(
            model=profile.model,
            config=profile.config,
            lock_additional_fields=profile.sdk_lock_additional_fields,
            uses=grant.uses,
            expire_time=grant.expire_time,
            new_session_expire_time=grant.new_session_expire_time,
        )
        started = time.perf_counter()
        try:
            minted = await gateway.mint_token(api_key=prepared.api_key, config=create_config)
        except gateway.UpstreamError as error:
            metrics.UPSTREAM_LATENCY.labels(error.code).observe(time.perf_counter() - started)
            raise
        metrics.UPSTREAM_LATENCY.labels("ok").observe(minted.latency_ms / 1000)
        if prepared.on_loop:
            await _finish_issued_on_loop(prepared, minted)
        else:
            await _finish_issued_async(prepared, minted)
    except gateway.UpstreamError as error:
        await asyncio.shield(_finish_failed_async(prepared, error.code, error.detail))
        raise IssuanceError(
            error.code, error.http_status, error.detail, retry_after=error.retry_after
        ) from None
    except BaseException as error:
        # Anything else (the client hung up, a bug): no PENDING row or reservation is left.
        # Shielded, so a cancelled request still finishes its own bookkeeping.
        await asyncio.shield(_finish_abandoned(prepared, type(error).__name__))
        raise
    return IssuedToken(
        token=minted.name,
        expire_time=grant.expire_time,
        new_session_expire_time=grant.new_session_expire_time,
        uses=grant.uses,
        profile=profile.slug,
        model=profile.model,
        locked_fields=locked_fields(minted.request_body),
        grant_id=str(grant.public_id),
        sandbox=bool(settings.GEMINI_BASE_URL),
    )
