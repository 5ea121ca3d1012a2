"""The issuance path of DESIGN.md §7: decide, reserve, record, ask Google, record again.

``token_issue`` is async so that no worker thread waits while Google answers; the database
work before and after the upstream call runs in two short synchronous steps
(``issue_prepare`` and the grant's final update), each one hop to ``run_sync``'s threads.
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
from apps.issuance.policy_cache import IssuancePolicy, issuance_policy_for
from apps.issuance.quotas import (
    DatabaseQuotaEngine,
    QuotaBackendUnavailable,
    QuotaDenied,
    Reservation,
    active_cap_for,
    applicable_limits,
    quota_engine,
)
from apps.policies.live_schema import locked_fields, token_config
from apps.policies.models import LiveConstraintProfile
from apps.tenants.models import GEMINI_MAX_WINDOW_SECONDS, Organization, User
from portal import metrics
from portal.crypto import SecretUnreadable, fingerprint_key, token_fingerprint
from portal.db import default_connection, hot_cursor

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
# busier the event loop, the longer each wait; at 256 clients two threads served 17 % more
# than six (README, "Serving"), one thread more still, but with no overlap of round trips.
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
    for ``thread_sensitive=False``, without its per-call bookkeeping (about a tenth of the
    event loop's time per request under load). Nothing here calls back into async code.
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
    if error.code == "quota_exceeded":
        metrics.QUOTA_DENIALS.labels(caller.organization.slug, error.extra["limit"]).inc()
    _observe(grant)
    return grant


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


def _deny(
    caller: Caller, request: TokenRequest, outcome: str, error: IssuanceError, profile=None
) -> NoReturn:
    refusal_record(caller=caller, error=error, request=request, profile=profile, outcome=outcome)
    raise error


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


def _check_caller(caller: Caller, request: TokenRequest) -> None:
    """A valid key of a disabled app or org, or a call from an origin the app did not list."""
    app = caller.client_app
    if not caller.organization.is_active:
        _deny(
            caller,
            request,
            Outcome.DENIED_POLICY,
            IssuanceError("forbidden", 403, "This organisation is disabled."),
        )
    if app is not None and not app.is_active:
        _deny(
            caller,
            request,
            Outcome.DENIED_POLICY,
            IssuanceError("forbidden", 403, "This client app is disabled."),
        )
    if app is not None and caller.origin and caller.origin not in app.allowed_origins:
        _deny(
            caller,
            request,
            Outcome.DENIED_POLICY,
            IssuanceError("forbidden", 403, f"Origin {caller.origin} is not allowed for this app."),
        )


def _resolve_profile(
    caller: Caller, request: TokenRequest, policy: IssuancePolicy
) -> LiveConstraintProfile:
    profile = policy.profiles.get(request.profile)
    if profile is None:
        _deny(
            caller,
            request,
            Outcome.DENIED_POLICY,
            IssuanceError("profile_not_found", 404, f"No profile '{request.profile}'."),
        )
    if not profile.is_active:
        _deny(
            caller,
            request,
            Outcome.DENIED_POLICY,
            IssuanceError("forbidden", 403, f"Profile '{profile.slug}' is disabled."),
            profile,
        )
    if caller.client_app is not None:
        allowed = profile.pk in policy.app_profiles.get(caller.client_app.pk, ())
    else:
        allowed = profile.members_may_use
    if not allowed:
        who = "This app" if caller.client_app is not None else "Members"
        _deny(
            caller,
            request,
            Outcome.DENIED_POLICY,
            IssuanceError("forbidden", 403, f"{who} may not use profile '{profile.slug}'."),
            profile,
        )
    return profile


def issue_prepare(
    *, caller: Caller, request: TokenRequest, now: datetime | None = None
) -> _Prepared:
    """Steps 2–5, synchronously: resolve, clamp, reserve, and commit the PENDING grant.

    Raises IssuanceError (already audited) for a refusal. ``token_issue`` runs it in one hop;
    the API runs it in the same hop as authentication and parsing.
    """
    try:
        return _prepare_grant(caller, request, now or timezone.now())
    finally:
        release_connection()


def _prepare_grant(caller: Caller, request: TokenRequest, now: datetime) -> _Prepared:
    _check_caller(caller, request)
    try:
        policy = issuance_policy_for(caller.organization)
    except SecretUnreadable:
        _deny(
            caller,
            request,
            Outcome.DENIED_POLICY,
            IssuanceError(
                "upstream_error",
                502,
                "The organisation's Gemini key cannot be decrypted with the configured keys.",
            ),
        )
    fingerprint_key()  # fail before reserving, not after Google has minted a token
    profile = _resolve_profile(caller, request, policy)
    try:
        terms = clamp_terms(caller.organization, profile, request)
    except IssuanceError as error:
        _deny(caller, request, Outcome.DENIED_POLICY, error, profile)
    grant = TokenGrant(**_grant_fields(caller, request, profile), requested_at=now)
    limits = applicable_limits(
        organization=caller.organization,
        client_app_id=caller.client_app.pk if caller.client_app else None,
        profile_id=profile.pk,
        end_user=request.end_user,
        quotas=policy.quotas,
        now=now,
    )
    grant.expire_time = now + timedelta(seconds=terms.expire_seconds)
    grant.new_session_expire_time = now + timedelta(seconds=terms.new_session_seconds)
    grant.uses = terms.uses
    engine = quota_engine()
    in_database = isinstance(engine, DatabaseQuotaEngine)
    try:
        # The database engine's counters and the PENDING row: one transaction, both or
        # neither. A Redis reservation lives outside the database, so there the row is a
        # single autocommit INSERT (one round trip, where BEGIN … COMMIT costs three) and the
        # reservation is given back if the row cannot be written.
        with transaction.atomic() if in_database else nullcontext():
            reservation = engine.reserve(
                limits, active_cap_for(caller.organization), grant.public_id, grant.expire_time, now
            )
            try:
                grant.quota_reservation = reservation.as_json()
                _grant_insert(grant)
            except Exception:
                if not in_database:
                    engine.refund(reservation)
                raise
    except QuotaDenied as denied:
        _deny(
            caller,
            request,
            Outcome.DENIED_QUOTA,
            IssuanceError(
                "quota_exceeded",
                429,
                f"Quota exceeded: {denied.name}.",
                retry_after=denied.retry_after,
                extra={"limit": denied.name},
            ),
            profile,
        )
    except QuotaBackendUnavailable:
        _deny(
            caller,
            request,
            Outcome.DENIED_QUOTA,
            IssuanceError(
                "quota_backend_unavailable",
                503,
                "Quotas cannot be checked right now; no token was issued.",
                retry_after=5,
            ),
            profile,
        )
    return _Prepared(
        grant=grant,
        profile=profile,
        reservation=reservation,
        api_key=policy.api_key,
    )


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


@cache
def _grant_sql() -> tuple[str, tuple, str, tuple]:
    """An INSERT of every column and the UPDATE of the issued fields, built from the model.

    What ``save()`` would send, without the per-call SQL compilation: these run on every
    issuance. Identifiers come from the model; values are parameters.
    """
    quote = connection.ops.quote_name
    meta = TokenGrant._meta
    table, pk = quote(meta.db_table), quote(meta.pk.column)
    inserted = tuple(field for field in meta.concrete_fields if not field.primary_key)
    insert = (
        f"INSERT INTO {table} ({', '.join(quote(field.column) for field in inserted)}) "  # noqa: S608
        f"VALUES ({', '.join(['%s'] * len(inserted))}) RETURNING {pk}"
    )
    updated = tuple(meta.get_field(name) for name in _ISSUED_FIELDS)
    # Only a grant still PENDING: one the reaper has given up on (and maybe sealed) stays so.
    update = (
        f"UPDATE {table} SET {', '.join(f'{quote(field.column)} = %s' for field in updated)} "  # noqa: S608
        f"WHERE {pk} = %s AND {quote(meta.get_field('outcome').column)} = %s"
    )
    return insert, inserted, update, updated


def _raw_writes_allowed(db: BaseDatabaseWrapper) -> bool:
    """The raw statements stand in for ``save()`` only where nothing listens to it."""
    return db.features.can_return_columns_from_insert and not any(
        signal.has_listeners(TokenGrant) for signal in (signals.pre_save, signals.post_save)
    )


def _grant_insert(grant: TokenGrant) -> None:
    db = default_connection()
    if not _raw_writes_allowed(db):
        grant.save(force_insert=True)
        return
    sql, fields, _, _ = _grant_sql()
    values = [field.get_db_prep_save(field.pre_save(grant, True), db) for field in fields]
    with hot_cursor(db) as cursor:
        cursor.execute(sql, values)
        grant.pk = cursor.fetchone()[0]
    grant._state.adding = False
    grant._state.db = db.alias


def _grant_update_issued(grant: TokenGrant) -> bool:
    """Record the token on the PENDING grant; False if the grant is no longer PENDING."""
    db = default_connection()
    if not _raw_writes_allowed(db):
        return bool(
            TokenGrant.objects.filter(pk=grant.pk, outcome=Outcome.PENDING).update(
                **{name: getattr(grant, name) for name in _ISSUED_FIELDS}
            )
        )
    _, _, sql, fields = _grant_sql()
    values = [field.get_db_prep_save(getattr(grant, field.attname), db) for field in fields]
    with hot_cursor(db) as cursor:
        cursor.execute(sql, [*values, grant.pk, Outcome.PENDING])
        return cursor.rowcount == 1


def _finish_issued(prepared: _Prepared, minted: gateway.MintedToken) -> None:
    grant = prepared.grant
    grant.outcome = Outcome.ISSUED
    grant.issued_at = timezone.now()
    grant.lifecycle = TokenGrant.Lifecycle.ACTIVE
    grant.request_body = minted.request_body
    grant.upstream_latency_ms = minted.latency_ms
    grant.token_fingerprint = token_fingerprint(minted.name)
    try:
        recorded = _grant_update_issued(grant)
    finally:
        release_connection()
    if not recorded:
        # reap_pending gave this grant up (twice the upstream timeout passed): its row says
        # ABANDONED and may be sealed, so the token must not leave without a record.
        raise gateway.UpstreamError(
            "upstream_timeout", 504, "Google answered too late; no token was issued."
        )
    _observe(grant, upstream_ms=minted.latency_ms)


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
