"""Issuance's rules, without I/O: who may ask, for which profile, on what terms, within which
limits, and what each outcome writes on the grant.

Everything here takes what it needs as arguments (the caller, the request, the organisation's
cached policy, the time) and either answers or raises ``Refused``: a decision to refuse that
the flow (services.py) then records. The stores (store/) do the reading and writing.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from apps.audit.models import TokenGrant
from apps.clients.models import ClientKey
from apps.issuance.contract import Caller, IssuanceError, TokenRequest
from apps.issuance.policy_cache import IssuancePolicy
from apps.issuance.quotas import (
    ActiveCap,
    Limit,
    QuotaDenied,
    Reservation,
    active_cap_for,
    applicable_limits,
)
from apps.policies.models import LiveConstraintProfile
from apps.tenants.models import GEMINI_MAX_WINDOW_SECONDS, Organization
from portal.crypto import fingerprint_key, token_fingerprint

Outcome = TokenGrant.Outcome

# The fields each final outcome writes on a PENDING grant (the stores update only these).
ISSUED_FIELDS = (
    "outcome",
    "issued_at",
    "lifecycle",
    "request_body",
    "upstream_latency_ms",
    "token_fingerprint",
)
REFUSED_FIELDS = (
    "outcome",
    "error_code",
    "detail",
    "quota_reservation",
    "expire_time",
    "new_session_expire_time",
    "uses",
)
# A failed attempt keeps the body that was sent, if any: what Google may have minted from.
FAILED_FIELDS = ("outcome", "error_code", "detail", "request_body")  # and the refunded reservation


class Refused(Exception):
    """A decision to refuse, not yet recorded: the flow writes the refusal row, then answers
    with ``error``."""

    def __init__(self, outcome: str, error: IssuanceError, profile=None) -> None:
        super().__init__(error.message)
        self.outcome = outcome
        self.error = error
        self.profile = profile


def forbidden(message: str, profile: LiveConstraintProfile | None = None) -> Refused:
    return Refused(Outcome.DENIED_POLICY, IssuanceError("forbidden", 403, message), profile)


def key_unreadable() -> Refused:
    return Refused(
        Outcome.DENIED_POLICY,
        IssuanceError(
            "upstream_error",
            502,
            "The organisation's Gemini key cannot be decrypted with the configured keys.",
        ),
    )


def quota_refused(denied: QuotaDenied, profile: LiveConstraintProfile) -> Refused:
    error = IssuanceError(
        "quota_exceeded",
        429,
        f"Quota exceeded: {denied.name}.",
        retry_after=denied.retry_after,
        extra={"limit": denied.name},
    )
    return Refused(Outcome.DENIED_QUOTA, error, profile)


def quota_backend_refused(profile: LiveConstraintProfile) -> Refused:
    error = IssuanceError(
        "quota_backend_unavailable",
        503,
        "Quotas cannot be checked right now; no token was issued.",
        retry_after=5,
    )
    return Refused(Outcome.DENIED_QUOTA, error, profile)


READ_KEY_REFUSED = "This key reads usage only; a key that issues tokens must be made for that."


def check_caller(caller: Caller) -> None:
    """A valid key of a disabled app or org, or a call from an origin the app did not list;
    or a key that may not issue at all (a read key)."""
    app = caller.client_app
    if caller.scope != ClientKey.Scope.ISSUE:
        raise forbidden(READ_KEY_REFUSED)
    if not caller.organization.is_active:
        raise forbidden("This organisation is disabled.")
    if app is not None and not app.is_active:
        raise forbidden("This client app is disabled.")
    if app is not None and caller.origin and caller.origin not in app.allowed_origins:
        raise forbidden(f"Origin {caller.origin} is not allowed for this app.")


def resolve_profile(
    caller: Caller, request: TokenRequest, policy: IssuancePolicy
) -> LiveConstraintProfile:
    """The profile asked for, if it exists, is active, and this caller may use it."""
    profile = policy.profiles.get(request.profile)
    if profile is None:
        raise Refused(
            Outcome.DENIED_POLICY,
            IssuanceError("profile_not_found", 404, f"No profile '{request.profile}'."),
        )
    if not profile.is_active:
        raise forbidden(f"Profile '{profile.slug}' is disabled.", profile)
    if caller.client_app is not None:
        allowed = profile.pk in policy.app_profiles.get(caller.client_app.pk, ())
    else:
        allowed = profile.members_may_use
    if not allowed:
        who = "This app" if caller.client_app is not None else "Members"
        raise forbidden(f"{who} may not use profile '{profile.slug}'.", profile)
    return profile


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


def grant_fields(
    caller: Caller, request: TokenRequest | None, profile: LiveConstraintProfile | None
) -> dict[str, Any]:
    """What every grant of this caller and request records, whatever its outcome."""
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


@dataclass
class Approved:
    """A request that passed every policy check: the grant to record, the limits to reserve
    against and the Gemini key to mint with."""

    grant: TokenGrant
    profile: LiveConstraintProfile
    limits: list[Limit]
    cap: ActiveCap
    api_key: str


@dataclass
class PendingGrant:
    """A grant committed PENDING, holding its quota reservation, waiting for Google."""

    grant: TokenGrant
    profile: LiveConstraintProfile
    reservation: Reservation
    api_key: str


def approve(
    caller: Caller, request: TokenRequest, policy: IssuancePolicy | None, now: datetime
) -> Approved:
    """Check the caller, resolve the profile, clamp the terms, name the limits; nothing is
    written yet. ``policy`` is None when the organisation's Gemini key cannot be read."""
    check_caller(caller)
    if policy is None:
        raise key_unreadable()
    fingerprint_key()  # fail before reserving, not after Google has minted a token
    profile = resolve_profile(caller, request, policy)
    try:
        terms = clamp_terms(caller.organization, profile, request)
    except IssuanceError as error:
        raise Refused(Outcome.DENIED_POLICY, error, profile) from None
    grant = TokenGrant(**grant_fields(caller, request, profile), requested_at=now)
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
    return Approved(grant, profile, limits, active_cap_for(caller.organization), policy.api_key)


def refusal_grant(caller: Caller, request: TokenRequest | None, refused: Refused) -> TokenGrant:
    """A new grant row for a refusal decided before anything was written."""
    error = refused.error
    return TokenGrant(
        **grant_fields(caller, request, refused.profile),
        outcome=refused.outcome,
        error_code=error.code,
        detail=error.message[:500],
    )


def refuse(grant: TokenGrant, refused: Refused) -> TokenGrant:
    """An approved grant turned into the refusal ``refusal_grant`` would have written (no
    terms, no reservation): for a refusal decided when reserving, whether or not its row
    was written PENDING already."""
    error = refused.error
    grant.outcome, grant.error_code, grant.detail = refused.outcome, error.code, error.message[:500]
    grant.quota_reservation = grant.expire_time = grant.new_session_expire_time = None
    grant.uses = None
    return grant


def mark_issued(grant: TokenGrant, *, token: str, request_body: dict, latency_ms: int) -> None:
    """The grant of a minted token: its fingerprint, never the token itself."""
    grant.outcome = Outcome.ISSUED
    grant.issued_at = timezone.now()
    grant.lifecycle = TokenGrant.Lifecycle.ACTIVE
    grant.request_body = request_body
    grant.upstream_latency_ms = latency_ms
    grant.token_fingerprint = token_fingerprint(token)


def mark_failed(
    grant: TokenGrant, error_code: str, detail: str, request_body: dict | None = None
) -> None:
    """The grant of an attempt that ended without a token (the store gives its reservation
    back and clears it, if the quota store answers), with the body sent, if it was."""
    grant.outcome = Outcome.ABANDONED if error_code == "abandoned" else Outcome.UPSTREAM_ERROR
    grant.error_code = error_code
    grant.detail = detail[:500]
    grant.request_body = request_body
