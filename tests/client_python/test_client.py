"""The sync client against a live portal minting through the sandbox: what a tenant's backend
sees for a token, the profiles, and every error the portal answers with, retries included.

Retries are timed with a fake clock: the client's sleep is recorded, never slept.
"""

import socket
import traceback
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from asgiref.sync import async_to_sync
from ephemera_client import (
    USER_AGENT,
    EphemeraClient,
    EphemeraConnectionError,
    Forbidden,
    InternalError,
    InvalidRequest,
    IssuedToken,
    NotFound,
    Profile,
    ProfileNotFound,
    QuotaBackendUnavailable,
    QuotaExceeded,
    Unauthenticated,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    __version__,
)

from apps.audit.models import TokenGrant
from apps.clients import services as client_services
from apps.clients.models import ClientKey
from apps.issuance.sandbox import Faults
from tests.conftest import well_inside_window
from tests.issuance.conftest import one_token_per_end_user_per_hour

pytestmark = pytest.mark.django_db(transaction=True)  # the server's threads see the rows

PROFILE = "alpha-voice"  # two_orgs' profile for Alpha


def client_for(portal, fake_clock, key=None, **options) -> EphemeraClient:
    key = portal.alpha.raw_client_key if key is None else key
    return EphemeraClient(portal.url, key, _sleep=fake_clock, **options)


def grants(portal) -> list[TokenGrant]:
    return list(TokenGrant.objects.filter(organization=portal.alpha.organization).order_by("id"))


def test_a_token_for_an_end_user(portal, fake_clock):
    with client_for(portal, fake_clock) as client:
        issued = client.token(PROFILE, end_user="user-42")

    assert isinstance(issued, IssuedToken)
    assert issued.token.startswith("auth_tokens/")
    assert (issued.profile, issued.model, issued.sandbox) == (
        PROFILE,
        portal.alpha.profile.model,
        True,
    )
    now = datetime.now(UTC)
    assert now < issued.new_session_expire_time <= issued.expire_time < now + timedelta(days=1)
    assert issued.uses == portal.alpha.profile.uses
    [grant] = grants(portal)
    assert str(grant.public_id) == issued.grant_id
    assert (grant.outcome, grant.end_user) == (TokenGrant.Outcome.ISSUED, "user-42")
    assert grant.user_agent == USER_AGENT
    assert USER_AGENT.startswith(f"ephemera-client/{__version__} python-httpx/")
    assert fake_clock.slept == []


def test_only_the_options_given_are_sent_and_they_apply(portal, fake_clock):
    sent = []
    http = httpx.Client(event_hooks={"request": [lambda request: sent.append(request)]})
    with client_for(portal, fake_clock, http_client=http) as client:
        issued = client.token(PROFILE, "user-42", uses=1, expire_seconds=120)
        plain = client.token(PROFILE)

    assert [request.read() for request in sent] == [
        b'{"profile": "alpha-voice", "end_user": "user-42", "uses": 1, "expire_seconds": 120}',
        b'{"profile": "alpha-voice"}',
    ]
    assert issued.uses == 1
    assert issued.expire_time <= datetime.now(UTC) + timedelta(seconds=120)
    assert plain.expire_time > issued.expire_time
    assert not http.is_closed  # a client passed in stays the caller's
    http.close()


def test_the_profiles_the_key_may_use(portal, fake_clock):
    with client_for(portal, fake_clock) as client:
        profiles = client.profiles()

    profile = portal.alpha.profile
    assert [type(each) for each in profiles] == [Profile]
    [listed] = profiles
    assert (listed.slug, listed.name, listed.model) == (profile.slug, profile.name, profile.model)
    assert (listed.uses, listed.expire_seconds, listed.new_session_seconds) == (
        profile.uses,
        profile.expire_seconds,
        profile.new_session_seconds,
    )


def test_the_lock_and_config_of_the_token_and_its_profile(portal, fake_clock):
    """The fields issue 20 adds server-side (lock, locked_fields, config)."""
    with client_for(portal, fake_clock) as client:
        [listed] = client.profiles()
        issued = client.token(PROFILE)

    assert issued.lock == listed.lock == "whole_setup"
    assert issued.config == listed.config == {"response_modalities": ["AUDIO"]}
    assert issued.locked_fields == listed.locked_fields
    assert issued.locked_fields and all(isinstance(name, str) for name in issued.locked_fields)


def test_invalid_request_names_the_field(portal, fake_clock):
    with client_for(portal, fake_clock) as client, pytest.raises(InvalidRequest) as raised:
        client.token(PROFILE, uses=-1)

    error = raised.value
    assert (error.code, error.status, error.field, error.retry_after) == (
        "invalid_request",
        400,
        "uses",
        None,
    )
    [grant] = grants(portal)
    assert error.request_id and error.request_id == grant.request_id
    assert error.body["error"]["code"] == "invalid_request"
    assert fake_clock.slept == []


def test_a_wrong_key_is_unauthenticated(portal, fake_clock):
    wrong = "eph_AAAAAAAA_" + "b" * 40
    with client_for(portal, fake_clock, key=wrong) as client:
        with pytest.raises(Unauthenticated) as raised:
            client.token(PROFILE)
        with pytest.raises(Unauthenticated):
            client.profiles()

    assert (raised.value.code, raised.value.status) == ("unauthenticated", 401)
    assert fake_clock.slept == []


def test_a_read_key_is_forbidden(portal, fake_clock):
    alpha = portal.alpha
    _, read_key = client_services.client_key_create(
        organization=alpha.organization,
        client_app=alpha.client_app,
        actor=alpha.owner,
        scope=ClientKey.Scope.READ_USAGE,
    )
    with client_for(portal, fake_clock, key=read_key) as client:
        with pytest.raises(Forbidden) as raised:
            client.token(PROFILE)
        with pytest.raises(Forbidden):
            client.profiles()

    assert (raised.value.code, raised.value.status) == ("forbidden", 403)
    assert fake_clock.slept == []


def test_another_organisations_profile_is_not_found(portal, fake_clock):
    with client_for(portal, fake_clock) as client, pytest.raises(ProfileNotFound) as raised:
        client.token("bravo-voice")

    assert (raised.value.code, raised.value.status) == ("profile_not_found", 404)


def test_an_unknown_endpoint_is_not_found(portal, fake_clock):
    """A base URL with one /api too many: the API's own 404 (issue 20's strict input)."""
    client = EphemeraClient(f"{portal.url}/api", portal.alpha.raw_client_key)
    with client, pytest.raises(NotFound) as raised:
        client.profiles()

    assert (raised.value.code, raised.value.status) == ("not_found", 404)


def test_a_quota_waiting_longer_than_the_cap_raises_at_once(portal, fake_clock):
    async_to_sync(one_token_per_end_user_per_hour)(portal.alpha.organization)
    well_inside_window(3600, room=60)  # so that the hour's end is beyond max_retry_wait
    with client_for(portal, fake_clock) as client:
        client.token(PROFILE, "user-42")
        with pytest.raises(QuotaExceeded) as raised:
            client.token(PROFILE, "user-42")

    error = raised.value
    assert (error.code, error.status) == ("quota_exceeded", 429)
    assert error.limit
    assert error.retry_after > 30  # the hour's end, beyond max_retry_wait
    assert fake_clock.slept == []
    assert [grant.outcome for grant in grants(portal)] == ["issued", "denied_quota"]


def test_a_quota_within_the_cap_is_waited_for_then_raised(portal, fake_clock):
    async_to_sync(one_token_per_end_user_per_hour)(portal.alpha.organization)
    well_inside_window(3600, room=30)
    with client_for(portal, fake_clock, max_retries=2, max_retry_wait=7200) as client:
        client.token(PROFILE, "user-42")
        with pytest.raises(QuotaExceeded) as raised:
            client.token(PROFILE, "user-42")  # the fake clock never lets the hour pass

    assert len(fake_clock.slept) == 2
    assert all(raised.value.retry_after <= wait <= 7200 for wait in fake_clock.slept)
    assert [grant.outcome for grant in grants(portal)] == ["issued"] + ["denied_quota"] * 3


def test_upstream_error_is_not_retried(portal, sandbox, fake_clock):
    sandbox.state.faults = Faults(status=500)
    with client_for(portal, fake_clock) as client, pytest.raises(UpstreamError) as raised:
        client.token(PROFILE)

    assert (raised.value.code, raised.value.status) == ("upstream_error", 502)
    assert sandbox.state.calls == 1
    assert fake_clock.slept == []


def test_upstream_unavailable_is_retried_after_retry_after(portal, sandbox, fake_clock):
    sandbox.state.faults = Faults(status=429)  # Google's 429: the portal's 503, Retry-After 5

    def google_recovers():
        sandbox.state.faults = Faults()

    fake_clock.on_sleep = google_recovers
    with client_for(portal, fake_clock) as client:
        issued = client.token(PROFILE)

    assert issued.token.startswith("auth_tokens/")
    [wait] = fake_clock.slept
    assert 5 <= wait <= 30
    assert sandbox.state.calls == 2
    assert [grant.error_code for grant in grants(portal)] == ["upstream_unavailable", ""]


def test_upstream_unavailable_raises_once_the_retries_are_spent(portal, sandbox, fake_clock):
    sandbox.state.faults = Faults(status=429)
    client = client_for(portal, fake_clock, max_retries=2)
    with client, pytest.raises(UpstreamUnavailable) as raised:
        client.token(PROFILE)

    assert (raised.value.code, raised.value.status, raised.value.retry_after) == (
        "upstream_unavailable",
        503,
        5,
    )
    assert len(fake_clock.slept) == 2
    assert sandbox.state.calls == 3


def test_upstream_timeout_is_not_retried(portal, sandbox, settings, fake_clock):
    """A 504 may have minted a token: retrying would spend the quota again."""
    settings.GEMINI_TIMEOUT_MS = 300
    sandbox.state.faults = Faults(delay_ms=1000)
    with client_for(portal, fake_clock) as client, pytest.raises(UpstreamTimeout) as raised:
        client.token(PROFILE)

    assert (raised.value.code, raised.value.status) == ("upstream_timeout", 504)
    assert sandbox.state.calls == 1
    assert fake_clock.slept == []


def test_the_client_rides_out_a_quota_store_restart(own_redis, portal, sandbox, fake_clock):
    own_redis.stop()
    fake_clock.on_sleep = own_redis.start
    with client_for(portal, fake_clock) as client:
        issued = client.token(PROFILE)

    assert issued.token.startswith("auth_tokens/")
    [wait] = fake_clock.slept
    assert 5 <= wait <= 30
    assert [grant.error_code for grant in grants(portal)] == ["quota_backend_unavailable", ""]


def test_the_quota_store_down_raises_quota_backend_unavailable(own_redis, portal, fake_clock):
    own_redis.stop()
    client = client_for(portal, fake_clock, max_retries=0)
    with client, pytest.raises(QuotaBackendUnavailable) as raised:
        client.token(PROFILE)

    assert (raised.value.code, raised.value.status, raised.value.retry_after) == (
        "quota_backend_unavailable",
        503,
        5,
    )


def test_a_bug_on_the_portal_is_an_internal_error(portal, monkeypatch, fake_clock):
    def bug(caller):
        raise RuntimeError("a bug")

    monkeypatch.setattr("apps.issuance.api._profiles", bug)
    with client_for(portal, fake_clock) as client, pytest.raises(InternalError) as raised:
        client.profiles()

    assert (raised.value.code, raised.value.status) == ("internal_error", 500)
    assert fake_clock.slept == []


def test_a_portal_that_cannot_be_reached_is_retried_then_a_connection_error(fake_clock):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    client = EphemeraClient(url, "eph_AAAAAAAA_" + "b" * 40, _sleep=fake_clock)
    with client, pytest.raises(EphemeraConnectionError) as raised:
        client.token(PROFILE)

    assert raised.value.status is None
    assert len(fake_clock.slept) == 3  # nothing was sent, so trying again is safe


def test_the_key_is_never_logged_nor_shown(portal, sandbox, caplog, fake_clock):
    key = portal.alpha.raw_client_key
    secret = key.rsplit("_", 1)[1]
    caplog.set_level("DEBUG")  # the root: the library, httpx, httpcore and the portal
    sandbox.state.faults = Faults(status=429)
    fake_clock.on_sleep = lambda: setattr(sandbox.state, "faults", Faults())
    errors = []
    with client_for(portal, fake_clock) as client:
        client.token(PROFILE)  # a retry, then a token
        shown = [repr(client), str(client)]
        for call in (lambda: client.token(PROFILE, uses=-1), lambda: client.token("nope")):
            with pytest.raises(Exception) as raised:
                call()
            errors.append(raised.value)

    for error in errors:
        shown += [str(error), repr(error), "".join(traceback.format_exception(error))]
    assert any(record.name == "ephemera_client" for record in caplog.records)
    assert any(record.name.startswith("httpcore") for record in caplog.records)
    assert f"eph_{portal.alpha.client_key.prefix}_****" in shown[0]
    for text in [caplog.text, *shown]:
        assert secret not in text
    assert all(secret not in str(record.args) for record in caplog.records)
