"""Issuing one token, as one story (docs/architecture.md, "One token request").

The caller is already authenticated (the API asks the store for the key). Then: check the
caller and resolve the profile and its terms against the organisation's policy; reserve the
quota and commit the grant PENDING; ask Google; record the outcome; answer. Every attempt
inside an organisation leaves a row with its outcome, and the PENDING row is committed
before Google is asked (docs/adr/0011-pending-grant-before-the-mint.md). ``token_issue`` is
async so that no thread waits while Google answers; where the statements run is the store's
business (apps/issuance/store/), chosen once per process.
"""

import asyncio
import time
from typing import NoReturn

from django.conf import settings
from django.utils import timezone

from apps.audit.models import TokenGrant
from apps.issuance import gateway, observe, rules
from apps.issuance.contract import Caller, IssuanceError, IssuedToken, TokenRequest
from apps.issuance.quotas import QuotaBackendUnavailable, QuotaDenied
from apps.issuance.rules import Approved, PendingGrant, Refused
from apps.issuance.store import issuance_store
from apps.issuance.store.base import IssuanceStore
from apps.policies.live_schema import lock_of, locked_fields, token_config
from portal import metrics
from portal.crypto import SecretUnreadable


async def token_issue(*, caller: Caller, request: TokenRequest) -> IssuedToken:
    """Issue a token for ``request``, or raise IssuanceError; either way the grant says so."""
    store = issuance_store()
    approved = await _approve(store, caller, request)
    pending = await _reserve_and_record(store, approved)
    minted = await _mint_and_record(store, pending)
    grant, profile = pending.grant, pending.profile
    store.key_used(caller, grant.issued_at)  # started, not awaited: the answer is decided
    return IssuedToken(
        token=minted.name,
        expire_time=grant.expire_time,
        new_session_expire_time=grant.new_session_expire_time,
        uses=grant.uses,
        profile=profile.slug,
        model=profile.model,
        lock=lock_of(minted.request_body),
        locked_fields=locked_fields(minted.request_body),
        config=profile.config,
        grant_id=str(grant.public_id),
        sandbox=bool(settings.GEMINI_BASE_URL),
    )


async def refusal_record(
    *, caller: Caller, error: IssuanceError, request: TokenRequest | None = None
) -> None:
    """A request refused before issuance could read it (a bad body): its row, with why."""
    refused = Refused(TokenGrant.Outcome.DENIED_POLICY, error)
    await _record_refusal(issuance_store(), rules.refusal_grant(caller, request, refused), error)


async def _approve(store: IssuanceStore, caller: Caller, request: TokenRequest) -> Approved:
    """Who asks and for what, against the organisation's policy: no write unless refused."""
    try:
        policy = await store.policy(caller.organization)
    except SecretUnreadable:
        policy = None  # refused by the rules, once the caller has been checked
    try:
        return rules.approve(caller, request, policy, timezone.now())
    except Refused as refused:
        grant = rules.refusal_grant(caller, request, refused)
        await _record_refusal(store, grant, refused.error)


async def _reserve_and_record(store: IssuanceStore, approved: Approved) -> PendingGrant:
    """The quota taken and the grant committed PENDING, or the refusal recorded instead."""
    try:
        return await store.reserve_and_record(approved, approved.grant.requested_at)
    except QuotaDenied as denied:
        refused = rules.quota_refused(denied, approved.profile)
    except QuotaBackendUnavailable:
        refused = rules.quota_backend_refused(approved.profile)
    await _record_refusal(store, rules.refuse(approved.grant, refused), refused.error)


async def _record_refusal(
    store: IssuanceStore, grant: TokenGrant, error: IssuanceError
) -> NoReturn:
    if await store.record_refusal(grant):
        observe.refusal_observed(grant, error)
    raise error


async def _mint_and_record(store: IssuanceStore, pending: PendingGrant) -> gateway.MintedToken:
    """Ask Google for the token, then record what happened on the PENDING grant.

    Whatever ends the request early (Google's error, the client hanging up, a bug) leaves
    no PENDING row or reservation behind: the failure is recorded, shielded from the
    cancellation that may be ending the request.
    """
    grant = pending.grant
    sent: list = []  # the body as it went on the wire, kept on the grant whatever the end
    try:
        minted = await _mint(pending, sent)
        rules.mark_issued(
            grant,
            token=minted.name,
            request_body=minted.request_body,
            latency_ms=minted.latency_ms,
        )
        if not await store.record_issued(grant):
            # reap_pending gave this grant up (twice the upstream timeout passed): its row
            # says ABANDONED and may be sealed, so the token must not leave without a record.
            raise gateway.UpstreamError(
                "upstream_timeout", 504, "Google answered too late; no token was issued."
            )
    except gateway.UpstreamError as error:
        body = sent[-1] if sent else None
        await asyncio.shield(store.finish_failed(pending, error.code, error.detail, body))
        raise IssuanceError(
            error.code, error.http_status, error.detail, retry_after=error.retry_after
        ) from None
    except BaseException as error:
        body = sent[-1] if sent else None
        await asyncio.shield(store.finish_abandoned(pending, type(error).__name__, body))
        raise
    observe.outcome_observed(grant, upstream_ms=minted.latency_ms)
    return minted


async def _mint(pending: PendingGrant, sent: list) -> gateway.MintedToken:
    grant, profile = pending.grant, pending.profile
    if not pending.api_key:
        raise gateway.UpstreamError("upstream_error", 502, "No Gemini API key is configured.")
    config = token_config(
        model=profile.model,
        config=profile.config,
        lock_additional_fields=profile.sdk_lock_additional_fields,
        uses=grant.uses,
        expire_time=grant.expire_time,
        new_session_expire_time=grant.new_session_expire_time,
    )
    started = time.perf_counter()
    try:
        minted = await gateway.mint_token(api_key=pending.api_key, config=config, sent=sent)
    except gateway.UpstreamError as error:
        metrics.UPSTREAM_LATENCY.labels(error.code).observe(time.perf_counter() - started)
        raise
    metrics.UPSTREAM_LATENCY.labels("ok").observe(minted.latency_ms / 1000)
    return minted
