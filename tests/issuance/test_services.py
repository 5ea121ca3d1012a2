"""The issuance service's bookkeeping beyond the response: its log line, its counters, and
a grant the reaper gave up on while Google was still answering."""

import asyncio
import json
import logging
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db import DatabaseError, connection
from django.utils import timezone

from apps.audit import services as audit_services
from apps.audit.models import TokenGrant
from apps.clients.models import ClientKey
from apps.issuance import lifecycle
from apps.issuance.quotas import RedisQuotaEngine, quota_engine
from apps.issuance.sandbox import Faults
from apps.issuance.store import base as store_base
from apps.issuance.store import event_loop, issuance_store, threaded
from apps.issuance.store.base import key_use_writes_settled
from portal import metrics
from portal.logs import JsonFormatter
from tests.issuance.conftest import (
    bearer,
    one_token_per_end_user_per_hour,
    until_google_is_asked,
)

Outcome = TokenGrant.Outcome
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def post(api, raw_key, body):
    return await api.post(
        "/api/v1/tokens", json.dumps(body), content_type="application/json", headers=bearer(raw_key)
    )


def sample(metric, name: str, labels: dict[str, str]) -> float:
    """One sample of one of our metrics, read from the metric itself: the registry would also
    run the database collector, which cannot run in an async test."""
    for family in metric.collect():
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return found.value
    return 0.0


def issued_count(organization: str, outcome: str, profile: str) -> float:
    labels = {"organization": organization, "outcome": outcome, "profile": profile}
    return sample(metrics.TOKEN_ISSUANCES, "ephemera_token_issuances_total", labels)


def upstream_ok_count() -> float:
    return sample(
        metrics.UPSTREAM_LATENCY, "ephemera_upstream_latency_seconds_count", {"result": "ok"}
    )


async def test_each_attempt_leaves_one_issuance_line_and_counts(api, sandbox, two_orgs, caplog):
    alpha, _ = two_orgs
    caplog.set_level(logging.INFO, logger="ephemera.issuance")
    before_issued = issued_count("alpha", "issued", "alpha-voice")
    before_refused = issued_count("alpha", "denied_policy", "")
    latency_before = upstream_ok_count()

    ok = await post(api, alpha.raw_client_key, {"profile": "alpha-voice", "end_user": "u1"})
    refused = await post(api, alpha.raw_client_key, {"profile": "no-such-profile"})

    assert (ok.status_code, refused.status_code) == (201, 404)
    lines = [record for record in caplog.records if record.getMessage() == "issuance"]
    assert [(line.outcome, line.error_code) for line in lines] == [
        ("issued", ""),
        ("denied_policy", "profile_not_found"),
    ]
    issued = lines[0]
    assert (issued.org, issued.app, issued.profile) == ("alpha", "Alpha web", "alpha-voice")
    assert issued.grant_id == ok.json()["grant_id"]
    assert issued.request_id == ok["X-Request-ID"]
    assert issued.upstream_ms is not None and issued.total_ms >= 0
    written = "\n".join(JsonFormatter().format(line) for line in lines)
    assert ok.json()["token"] not in written and alpha.raw_client_key not in written
    assert issued_count("alpha", "issued", "alpha-voice") == before_issued + 1
    # an unknown slug is not a label: refusals count under the empty profile
    assert issued_count("alpha", "denied_policy", "") == before_refused + 1
    assert upstream_ok_count() == latency_before + 1


async def test_a_grant_reaped_while_google_answers_gets_no_token_and_stays_abandoned(
    api, sandbox, two_orgs, settings
):
    alpha, _ = two_orgs
    settings.GEMINI_TIMEOUT_MS = 3000
    sandbox.state.faults = Faults(delay_ms=1200)

    async def reap_meanwhile():
        await until_google_is_asked(sandbox)
        tally = audit_services.RunTally()
        later = timezone.now() + timedelta(minutes=5)  # as if the process had stalled
        await sync_to_async(lifecycle.grants_reap_pending)(tally=tally, now=later)
        return tally

    response, tally = await asyncio.gather(
        post(api, alpha.raw_client_key, {"profile": "alpha-voice"}), reap_meanwhile()
    )

    assert tally.totals() == {"abandoned": 1}
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert "token" not in response.json()
    grant = await TokenGrant.objects.aget(organization=alpha.organization)
    assert (grant.outcome, grant.token_fingerprint) == (TokenGrant.Outcome.ABANDONED, "")
    assert grant.detail == lifecycle.REAPED_DETAIL


async def test_a_grant_row_that_cannot_be_written_gives_its_quota_back(
    api, sandbox, two_orgs, monkeypatch, issuance_path
):
    """Redis reserves outside the database's transaction, so a failed INSERT must refund it
    (the database engine's counters roll back with the row). Runs on whichever engine the
    environment configures: CI runs it on both."""
    alpha, _ = two_orgs
    await one_token_per_end_user_per_hour(alpha.organization)
    body = {"profile": "alpha-voice", "end_user": "eve"}

    def disk_full(grant):
        raise DatabaseError("could not extend file")

    async def disk_full_async(grant):
        disk_full(grant)

    monkeypatch.setattr(threaded, "insert_grant", disk_full)
    monkeypatch.setattr(event_loop, "_insert_grant", disk_full_async)
    failed = await post(api, alpha.raw_client_key, body)
    monkeypatch.undo()
    retried = await post(api, alpha.raw_client_key, body)

    assert (failed.status_code, retried.status_code) == (500, 201)
    assert failed.json()["error"]["code"] == "internal_error"
    outcomes = [grant.outcome async for grant in TokenGrant.objects.filter(end_user="eve")]
    assert outcomes == [TokenGrant.Outcome.ISSUED]


async def test_a_quota_refusal_leaves_one_row_without_terms_or_reservation(
    api, sandbox, two_orgs, issuance_path, clock
):
    """On the event loop the PENDING row is written while the quota script runs, so there a
    refusal is that row's final update; it must read as the threads' refusal row does."""
    alpha, _ = two_orgs
    await one_token_per_end_user_per_hour(alpha.organization)
    body = {"profile": "alpha-voice", "end_user": "eve"}
    labels = {"organization": "alpha", "limit": "each end user quota 1 per hour"}
    denials_before = sample(metrics.QUOTA_DENIALS, "ephemera_quota_denials_total", labels)

    issued = await post(api, alpha.raw_client_key, body)
    refused = await post(api, alpha.raw_client_key, body)

    assert (issued.status_code, refused.status_code) == (201, 429)
    grants = [grant async for grant in TokenGrant.objects.filter(end_user="eve").order_by("id")]
    assert [grant.outcome for grant in grants] == [Outcome.ISSUED, Outcome.DENIED_QUOTA]
    denied = grants[1]
    assert (denied.error_code, denied.detail) == (
        "quota_exceeded",
        "Quota exceeded: each end user quota 1 per hour.",
    )
    assert (denied.expire_time, denied.new_session_expire_time, denied.uses) == (None,) * 3
    assert denied.quota_reservation is None and denied.profile_slug == "alpha-voice"
    denials = sample(metrics.QUOTA_DENIALS, "ephemera_quota_denials_total", labels)
    assert denials == denials_before + 1


async def test_on_the_event_loop_the_row_is_written_while_the_quota_script_runs(
    api, sandbox, two_orgs, monkeypatch, issuance_path
):
    if issuance_path != "event-loop":
        pytest.skip("the threads' path reserves first, then writes the row, in one step")
    alpha, _ = two_orgs
    engine = quota_engine()
    reserve = engine.reserve_async
    pending_seen = []

    async def reserve_once_the_row_is_there(*args):
        pending = TokenGrant.objects.filter(
            organization=alpha.organization, outcome=Outcome.PENDING
        )
        for _ in range(300):
            if await pending.aexists():
                pending_seen.append(True)
                break
            await asyncio.sleep(0.01)
        return await reserve(*args)

    monkeypatch.setattr(engine, "reserve_async", reserve_once_the_row_is_there)
    response = await post(api, alpha.raw_client_key, {"profile": "alpha-voice"})

    assert response.status_code == 201
    assert pending_seen == [True]
    grant = await TokenGrant.objects.aget(organization=alpha.organization)
    assert grant.outcome == Outcome.ISSUED and grant.quota_reservation is not None


@pytest.mark.parametrize("allowed", [True, False])
async def test_issuance_runs_on_the_event_loop_only_with_both_asyncio_stores(settings, allowed):
    settings.ISSUANCE_ON_EVENT_LOOP = allowed
    both = connection.vendor == "postgresql" and isinstance(quota_engine(), RedisQuotaEngine)

    on_the_loop = isinstance(issuance_store(), event_loop.EventLoopStore)

    assert on_the_loop is (allowed and both)


# --- a key's last use: stamped after the answer, at most once a minute -----------------------


@pytest.fixture
def key_use_writes(monkeypatch, issuance_path) -> list[tuple]:
    """The key-use writes the store starts, recorded (and still made)."""
    started = []
    store_class = type(issuance_store())
    write = store_class._write_key_use

    def recording(self, prefix, app_id, at, cutoff):
        started.append((prefix, at))
        return write(self, prefix, app_id, at, cutoff)

    monkeypatch.setattr(store_class, "_write_key_use", recording)
    return started


async def last_used(world) -> tuple:
    key = await ClientKey.objects.select_related("client_app").aget(pk=world.client_key.pk)
    return key.last_used_at, key.client_app.last_used_at


async def test_a_keys_last_use_is_stamped_on_its_first_token_then_at_most_once_a_minute(
    api, sandbox, two_orgs, clock, key_use_writes, issuance_path
):
    alpha, bravo = two_orgs
    body = {"profile": "alpha-voice", "end_user": "u1"}
    first = clock.now

    assert (await post(api, alpha.raw_client_key, body)).status_code == 201
    await key_use_writes_settled()
    assert await last_used(alpha) == (first, first)  # the key and its app

    clock.advance(seconds=59)
    assert (await post(api, alpha.raw_client_key, body)).status_code == 201
    await key_use_writes_settled()
    assert await last_used(alpha) == (first, first)  # not rewritten within the minute
    assert len(key_use_writes) == 1  # nor even tried: no statement ran for the second token

    clock.advance(seconds=2)
    assert (await post(api, alpha.raw_client_key, body)).status_code == 201
    await key_use_writes_settled()
    assert await last_used(alpha) == (first + timedelta(seconds=61),) * 2
    assert await last_used(bravo) == (None, None)


async def test_another_process_does_not_restamp_a_key_within_the_minute(
    api, sandbox, two_orgs, clock, monkeypatch, issuance_path
):
    """Each process keeps its own note of when it stamped a key; the UPDATE's condition holds
    across processes."""
    alpha, _ = two_orgs
    body = {"profile": "alpha-voice"}
    first = clock.now
    assert (await post(api, alpha.raw_client_key, body)).status_code == 201
    await key_use_writes_settled()

    monkeypatch.setattr(store_base, "_key_use_noted", {})  # as a second process sees it
    clock.advance(seconds=30)
    assert (await post(api, alpha.raw_client_key, body)).status_code == 201
    await key_use_writes_settled()

    assert await last_used(alpha) == (first, first)


async def test_refused_requests_stamp_nothing(
    api, sandbox, two_orgs, key_use_writes, issuance_path
):
    alpha, _ = two_orgs
    prefix = alpha.raw_client_key.split("_")[1]
    wrong_secret = f"eph_{prefix}_{'x' * 40}"
    unknown = f"eph_{'y' * 12}_{'x' * 40}"

    answers = [
        await post(api, wrong_secret, {"profile": "alpha-voice"}),
        await post(api, unknown, {"profile": "alpha-voice"}),
        await post(api, alpha.raw_client_key, {"profile": "no-such-profile"}),
    ]
    await key_use_writes_settled()

    assert [answer.status_code for answer in answers] == [401, 401, 404]
    assert key_use_writes == []
    assert await last_used(alpha) == (None, None)
