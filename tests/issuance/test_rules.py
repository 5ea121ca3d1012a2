"""Issuance's rules, without a database: unsaved rows in, a decision out."""

from datetime import UTC, datetime, timedelta

import pytest

from apps.audit.models import TokenGrant
from apps.clients.models import ClientApp
from apps.issuance import rules
from apps.issuance.contract import Caller, IssuanceError, TokenRequest
from apps.issuance.policy_cache import IssuancePolicy
from apps.issuance.quotas import QuotaDenied
from apps.policies.models import LiveConstraintProfile, Quota
from apps.tenants.models import GEMINI_MAX_WINDOW_SECONDS, Organization, User

NOW = datetime(2026, 12, 6, 12, 0, 30, tzinfo=UTC)


def organization(**plan) -> Organization:
    return Organization(pk=7, slug="acme", name="Acme", **plan)


def profile(org: Organization, **fields) -> LiveConstraintProfile:
    values = {
        "pk": 11,
        "slug": "voice",
        "model": "gemini-2.0-flash-live-001",
        "uses": 1,
        "expire_seconds": 1800,
        "new_session_seconds": 60,
        "version": 3,
        **fields,
    }
    return LiveConstraintProfile(organization=org, **values)


def app(org: Organization, **fields) -> ClientApp:
    return ClientApp(
        pk=5, organization=org, name="Web", allowed_origins=["https://a.test"], **fields
    )


def policy(*profiles, app_profiles=None, quotas=(), api_key="key") -> IssuancePolicy:
    return IssuancePolicy(
        profiles={p.slug: p for p in profiles},
        app_profiles=app_profiles if app_profiles is not None else {5: frozenset({11})},
        quotas=tuple(quotas),
        api_key=api_key,
    )


def refused(call) -> rules.Refused:
    with pytest.raises(rules.Refused) as caught:
        call()
    return caught.value


# --- the caller -------------------------------------------------------------------------


def test_an_active_app_of_an_active_organization_from_a_listed_origin_may_ask():
    org = organization()
    rules.check_caller(Caller(organization=org, client_app=app(org), origin="https://a.test"))


@pytest.mark.parametrize(
    ("org_active", "app_active", "origin", "message"),
    [
        (False, True, "", "This organisation is disabled."),
        (True, False, "", "This client app is disabled."),
        (True, True, "https://evil.test", "Origin https://evil.test is not allowed for this app."),
    ],
)
def test_a_disabled_caller_or_an_unlisted_origin_is_forbidden(
    org_active, app_active, origin, message
):
    org = organization(is_active=org_active)
    caller = Caller(organization=org, client_app=app(org, is_active=app_active), origin=origin)

    decision = refused(lambda: rules.check_caller(caller))

    assert (decision.outcome, decision.error.code, decision.error.http_status) == (
        TokenGrant.Outcome.DENIED_POLICY,
        "forbidden",
        403,
    )
    assert decision.error.message == message


# --- the profile ------------------------------------------------------------------------


def test_an_unknown_profile_is_not_found_and_names_what_was_asked():
    org = organization()
    caller = Caller(organization=org, client_app=app(org))

    decision = refused(
        lambda: rules.resolve_profile(caller, TokenRequest(profile="nope"), policy())
    )

    assert (decision.error.code, decision.error.http_status) == ("profile_not_found", 404)
    assert decision.profile is None


def test_a_profile_the_app_is_not_allowed_is_forbidden_and_the_refusal_names_it():
    org = organization()
    voice = profile(org)
    caller = Caller(organization=org, client_app=app(org))

    decision = refused(
        lambda: rules.resolve_profile(
            caller, TokenRequest(profile="voice"), policy(voice, app_profiles={})
        )
    )

    assert decision.error.message == "This app may not use profile 'voice'."
    assert decision.profile is voice


def test_members_use_only_profiles_open_to_members():
    org = organization()
    caller = Caller(organization=org, member=User(pk=3, username="m@acme.test"))
    open_to_members, closed = profile(org, members_may_use=True), profile(org, slug="closed")

    chosen = rules.resolve_profile(caller, TokenRequest(profile="voice"), policy(open_to_members))
    decision = refused(
        lambda: rules.resolve_profile(caller, TokenRequest(profile="closed"), policy(closed))
    )

    assert chosen is open_to_members
    assert decision.error.message == "Members may not use profile 'closed'."


def test_a_disabled_profile_is_forbidden():
    org = organization()
    caller = Caller(organization=org, client_app=app(org))
    disabled = profile(org, is_active=False)

    decision = refused(
        lambda: rules.resolve_profile(caller, TokenRequest(profile="voice"), policy(disabled))
    )

    assert decision.error.message == "Profile 'voice' is disabled."


# --- the terms: Gemini ≥ plan ≥ profile ≥ request ---------------------------------------


def test_the_plan_caps_the_profile_and_gemini_caps_the_plan():
    org = organization(max_expire_seconds=GEMINI_MAX_WINDOW_SECONDS + 10, max_uses=2)
    generous = profile(org, expire_seconds=10**6, new_session_seconds=10**6, uses=5)

    terms = rules.clamp_terms(org, generous, TokenRequest(profile="voice"))

    assert terms == rules.Terms(
        uses=2, expire_seconds=GEMINI_MAX_WINDOW_SECONDS, new_session_seconds=600
    )


def test_a_request_may_ask_for_less_but_never_more():
    org = organization()
    voice = profile(org, uses=3)

    less = rules.clamp_terms(
        org, voice, TokenRequest(profile="voice", uses=1, expire_seconds=45, new_session_seconds=50)
    )

    # The new-session window never outlasts the token itself.
    assert less == rules.Terms(uses=1, expire_seconds=45, new_session_seconds=45)
    with pytest.raises(IssuanceError) as more:
        rules.clamp_terms(org, voice, TokenRequest(profile="voice", expire_seconds=1801))
    assert more.value.extra == {"field": "expire_seconds"}
    assert more.value.message == "expire_seconds must be between 1 and 1800 for profile 'voice'."


def test_unlimited_uses_are_the_plans_maximum_unless_the_plan_allows_unlimited():
    unlimited = {"uses": 0}
    strict, lenient = organization(max_uses=4), organization(allow_unlimited_uses=True)

    assert rules.clamp_terms(strict, profile(strict, **unlimited), TokenRequest("voice")).uses == 4
    assert (
        rules.clamp_terms(lenient, profile(lenient, **unlimited), TokenRequest("voice")).uses == 0
    )


# --- approval: the grant to record and the limits it counts against -----------------------


def test_an_approved_request_carries_its_terms_the_limits_that_apply_and_the_key():
    org = organization()
    voice = profile(org)
    web = app(org)
    per_minute = Quota(
        pk=21, organization=org, scope="client_app", client_app=web, window="minute", limit=5
    )
    other_app = Quota(
        pk=22, organization=org, scope="client_app", client_app_id=99, window="day", limit=1
    )
    caller = Caller(organization=org, client_app=web, client_key_prefix="abc", request_id="r1")

    approved = rules.approve(
        caller,
        TokenRequest(profile="voice", end_user="u1", uses=1),
        policy(voice, quotas=[per_minute, other_app], api_key="gemini"),
        NOW,
    )

    grant = approved.grant
    assert grant.pk is None and grant.outcome == TokenGrant.Outcome.PENDING
    assert (grant.profile, grant.profile_slug, grant.profile_version) == (voice, "voice", 3)
    assert (grant.end_user, grant.requested, grant.request_id) == ("u1", {"uses": 1}, "r1")
    assert grant.expire_time == NOW + timedelta(seconds=1800)
    assert grant.new_session_expire_time == NOW + timedelta(seconds=60)
    minute, day = int(NOW.timestamp()) // 60 * 60, int(NOW.timestamp()) // 86400 * 86400
    assert [limit.key for limit in approved.limits] == [
        f"q:7:21:{minute}",  # this minute's window, of this app's quota only
        f"plan:7:day:{day}",
    ]
    assert (approved.cap.key, approved.cap.limit, approved.api_key) == ("active:7", 1000, "gemini")


def test_terms_a_request_may_not_have_are_a_policy_refusal_naming_the_profile():
    org = organization()
    voice = profile(org)
    caller = Caller(organization=org, client_app=app(org))

    decision = refused(
        lambda: rules.approve(caller, TokenRequest(profile="voice", uses=9), policy(voice), NOW)
    )

    assert (decision.outcome, decision.error.code) == (
        TokenGrant.Outcome.DENIED_POLICY,
        "invalid_request",
    )
    assert decision.profile is voice


# --- what each outcome writes -----------------------------------------------------------


def test_a_refusal_after_approval_keeps_no_terms_or_reservation():
    org = organization()
    voice = profile(org)
    approved = rules.approve(
        Caller(organization=org, client_app=app(org)), TokenRequest("voice"), policy(voice), NOW
    )
    approved.grant.quota_reservation = {"slot": "x"}
    denied = QuotaDenied("app quota 5 per minute", 5, 60, retry_after=30)

    grant = rules.refuse(approved.grant, rules.quota_refused(denied, voice))

    assert (grant.outcome, grant.error_code, grant.detail) == (
        TokenGrant.Outcome.DENIED_QUOTA,
        "quota_exceeded",
        "Quota exceeded: app quota 5 per minute.",
    )
    assert (
        grant.quota_reservation,
        grant.expire_time,
        grant.new_session_expire_time,
        grant.uses,
    ) == (None,) * 4
    assert grant.profile is voice


def test_an_issued_grant_keeps_the_tokens_fingerprint_never_the_token(settings):
    settings.AUDIT_HMAC_KEY = "fingerprints"
    grant = TokenGrant()

    rules.mark_issued(grant, token="auth_tokens/secret", request_body={"uses": 1}, latency_ms=12)

    assert grant.outcome == TokenGrant.Outcome.ISSUED
    assert grant.lifecycle == TokenGrant.Lifecycle.ACTIVE
    assert len(grant.token_fingerprint) == 64 and "secret" not in grant.token_fingerprint
    assert (grant.request_body, grant.upstream_latency_ms) == ({"uses": 1}, 12)


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        ("abandoned", TokenGrant.Outcome.ABANDONED),
        ("upstream_timeout", TokenGrant.Outcome.UPSTREAM_ERROR),
    ],
)
def test_an_attempt_without_a_token_says_why(code, outcome):
    grant = TokenGrant()

    rules.mark_failed(grant, code, "x" * 600)

    assert (grant.outcome, grant.error_code, len(grant.detail)) == (outcome, code, 500)


def test_an_unreadable_gemini_key_is_refused_but_only_after_the_caller_is_checked():
    org = organization()
    disabled = organization(is_active=False)

    unreadable = refused(
        lambda: rules.approve(Caller(organization=org), TokenRequest("voice"), None, NOW)
    )
    disabled_first = refused(
        lambda: rules.approve(Caller(organization=disabled), TokenRequest("voice"), None, NOW)
    )

    assert (unreadable.error.code, unreadable.error.http_status) == ("upstream_error", 502)
    assert (disabled_first.error.code, disabled_first.error.http_status) == ("forbidden", 403)
