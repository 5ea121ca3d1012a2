"""The issuance service's bookkeeping beyond the response: its log line, its counters, and
a grant the reaper gave up on while Google was still answering."""

import asyncio
import json
import logging
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone
from prometheus_client import REGISTRY

from apps.audit import services as audit_services
from apps.audit.models import TokenGrant
from apps.issuance.sandbox import Faults
from portal.logs import JsonFormatter
from tests.issuance.conftest import bearer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def post(api, raw_key, body):
    return await api.post(
        "/api/v1/tokens", json.dumps(body), content_type="application/json", headers=bearer(raw_key)
    )


def issued_count(organization: str, outcome: str, profile: str) -> float:
    value = REGISTRY.get_sample_value(
        "ephemera_token_issuances_total",
        {"organization": organization, "outcome": outcome, "profile": profile},
    )
    return value or 0.0


async def test_each_attempt_leaves_one_issuance_line_and_counts(api, sandbox, two_orgs, caplog):
    alpha, _ = two_orgs
    caplog.set_level(logging.INFO, logger="ephemera.issuance")
    before_issued = issued_count("alpha", "issued", "alpha-voice")
    before_refused = issued_count("alpha", "denied_policy", "")
    latency_before = REGISTRY.get_sample_value(
        "ephemera_upstream_latency_seconds_count", {"result": "ok"}
    )

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
    assert (
        REGISTRY.get_sample_value("ephemera_upstream_latency_seconds_count", {"result": "ok"})
        == (latency_before or 0) + 1
    )


async def test_a_grant_reaped_while_google_answers_gets_no_token_and_stays_abandoned(
    api, sandbox, two_orgs, settings
):
    alpha, _ = two_orgs
    settings.GEMINI_TIMEOUT_MS = 3000
    sandbox.state.faults = Faults(delay_ms=1200)

    async def reap_meanwhile():
        await asyncio.sleep(0.5)
        tally = audit_services.RunTally()
        later = timezone.now() + timedelta(minutes=5)  # as if the process had stalled
        await sync_to_async(audit_services.grants_reap_pending)(tally=tally, now=later)
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
    assert grant.detail == audit_services.REAPED_DETAIL
