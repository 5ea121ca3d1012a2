"""The auditor's console: read everything of their org, export it, change nothing."""

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.db.models import QuerySet
from django.test import AsyncClient
from django.urls import reverse
from django.utils import timezone

from apps.audit import admin as audit_admin
from apps.audit import services
from apps.audit.models import TokenGrant
from apps.tenants.models import Role
from tests.factories import TokenGrantFactory, token_for

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:audit_tokengrant_changelist"


@pytest.fixture
def auditor(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.AUDITOR])
    return client


def listed(response) -> list[TokenGrant]:
    assert response.status_code == 200, response
    return list(response.context["cl"].result_list)


def test_filters_and_exact_searches_find_the_right_grants(auditor, two_orgs):
    alpha, _ = two_orgs
    denied = TokenGrantFactory(
        organization=alpha.organization,
        outcome="denied_quota",
        client_app=alpha.client_app,
        requested_at=datetime(2026, 10, 5, 9, tzinfo=UTC),
    )
    url = reverse(CHANGELIST)

    assert listed(auditor.get(url, {"outcome": "denied_quota"})) == [denied]
    assert set(listed(auditor.get(url, {"app": alpha.client_app.pk}))) == {denied, alpha.grant}
    assert listed(auditor.get(url, {"profile": alpha.profile.pk})) == [alpha.grant]
    assert listed(auditor.get(url, {"from": "2026-10-05", "to": "2026-10-05"})) == [denied]
    assert listed(auditor.get(url, {"q": str(denied.public_id)})) == [denied]
    assert listed(auditor.get(url, {"q": denied.end_user})) == [denied]
    assert listed(auditor.get(url, {"q": alpha.grant.request_id})) == [alpha.grant]
    assert listed(auditor.get(url, {"q": denied.end_user[:-1]})) == []  # exact, not a scan
    assert auditor.get(url, {"from": "yesterday"}).status_code == 302  # ?e=1: bad input


def test_the_app_filter_offers_only_the_orgs_own_apps(auditor, two_orgs):
    response = auditor.get(reverse(CHANGELIST))
    text = response.content.decode()
    assert "Alpha web" in text and "Bravo web" not in text


def test_the_date_hierarchy_probes_give_what_django_would(two_orgs):
    alpha, _ = two_orgs
    for when in ("2026-01-31T23:00", "2026-03-01T00:30", "2026-03-17T12:00", "2025-12-01T00:00"):
        TokenGrantFactory(
            organization=alpha.organization, requested_at=datetime.fromisoformat(when + "+00:00")
        )
    plain = TokenGrant.objects.filter(organization=alpha.organization)
    probed = plain.all()
    probed.__class__ = audit_admin.ProbedDatesQuerySet

    for kind in ("year", "month", "day"):
        assert probed.datetimes("requested_at", kind) == list(
            QuerySet.datetimes(plain, "requested_at", kind)
        ), kind


def test_the_count_is_capped_and_says_so(auditor, two_orgs, monkeypatch):
    alpha, _ = two_orgs
    monkeypatch.setattr(audit_admin, "COUNT_CAP", 3)
    TokenGrantFactory.create_batch(5, organization=alpha.organization)

    response = auditor.get(reverse(CHANGELIST))

    assert response.context["cl"].result_count == 4
    assert len(listed(response)) == 6


def test_looking_up_a_pasted_token_opens_its_grant(auditor, two_orgs):
    alpha, bravo = two_orgs
    url = reverse("admin:audit_tokengrant_lookup")

    found = auditor.post(url, {"token": token_for(alpha.grant)})
    assert found.status_code == 302
    assert found["Location"] == reverse("admin:audit_tokengrant_change", args=[alpha.grant.pk])

    by_fingerprint = auditor.post(url, {"token": alpha.grant.token_fingerprint})
    assert by_fingerprint.status_code == 302

    foreign = auditor.post(url, {"token": token_for(bravo.grant)}, follow=True)
    text = foreign.content.decode()
    assert "No grant of Alpha Org matches that token." in text
    assert token_for(bravo.grant) not in text and "bravo" not in text.lower()


def export(client, fmt, **params):
    response = client.get(reverse(f"admin:audit_tokengrant_export_{fmt}"), params)
    assert response.status_code == 200, response
    assert "attachment" in response["Content-Disposition"]
    return b"".join(response.streaming_content).decode()


def test_the_csv_export_is_the_filtered_set_with_no_secret(auditor, two_orgs):
    alpha, bravo = two_orgs
    for _ in range(3):
        TokenGrantFactory(organization=alpha.organization, outcome="upstream_error")

    everything = list(csv.DictReader(io.StringIO(export(auditor, "csv"))))
    errors = list(csv.DictReader(io.StringIO(export(auditor, "csv", outcome="upstream_error"))))

    assert len(everything) == 4 and len(errors) == 3
    assert {row["outcome"] for row in errors} == {"upstream_error"}
    assert everything[-1]["public_id"] == str(alpha.grant.public_id)
    assert everything[-1]["client_app_name"] == "Alpha web"
    text = export(auditor, "csv")
    for secret in (
        alpha.raw_client_key,
        "alpha-gemini-key",
        token_for(alpha.grant),
        "quota_reservation",
        str(bravo.grant.public_id),
    ):
        assert secret not in text


def test_the_json_lines_export_parses_line_by_line(auditor, two_orgs):
    alpha, _ = two_orgs

    lines = export(auditor, "jsonl").splitlines()

    records = [json.loads(line) for line in lines]
    assert [record["public_id"] for record in records] == [str(alpha.grant.public_id)]
    assert records[0]["request_body"] == {"uses": 1}


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_under_asgi_the_export_streams_from_an_async_iterator(two_orgs):
    alpha, _ = two_orgs
    client = AsyncClient()
    await client.aforce_login(alpha.users[Role.AUDITOR])

    response = await client.get(reverse("admin:audit_tokengrant_export_csv"))

    assert response.status_code == 200
    assert response.is_async
    body = b"".join([chunk async for chunk in response.streaming_content]).decode()
    assert str(alpha.grant.public_id) in body


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.ADMIN, Role.OWNER])
def test_nobody_edits_or_deletes_the_record(client, two_orgs, role):
    alpha, _ = two_orgs
    client.force_login(alpha.users[role])
    grant = alpha.grant
    before = TokenGrant.objects.filter(pk=grant.pk).values().get()

    assert client.get(reverse("admin:audit_tokengrant_change", args=[grant.pk])).status_code == 200
    posted = client.post(
        reverse("admin:audit_tokengrant_change", args=[grant.pk]), {"end_user": "x"}
    )
    deleted = client.post(reverse("admin:audit_tokengrant_delete", args=[grant.pk]), {"post": "1"})
    added = client.get(reverse("admin:audit_tokengrant_add"))

    assert (posted.status_code, deleted.status_code, added.status_code) == (403, 403, 403)
    assert TokenGrant.objects.filter(pk=grant.pk).values().get() == before


def test_the_dashboard_charts_the_rollups(auditor, two_orgs):
    alpha, _ = two_orgs
    yesterday = timezone.now() - timedelta(days=1)
    for outcome in ["issued"] * 3 + ["denied_quota", "upstream_error"]:
        TokenGrantFactory(
            organization=alpha.organization,
            client_app=alpha.client_app,
            profile=alpha.profile,
            outcome=outcome,
            requested_at=yesterday,
            lifecycle="active" if outcome == "issued" else "",
        )
    services.usage_rollup(tally=services.RunTally(), now=timezone.now() + timedelta(minutes=2))

    response = auditor.get(reverse("admin:audit_tokengrant_dashboard"))

    text = response.content.decode()
    assert response.status_code == 200
    context = response.context
    assert context["totals"] == {"issued": 4, "denied": 1, "errors": 1}
    assert context["active_now"] == 1  # alpha.grant; yesterday's have expired
    assert context["top_apps"] == [("Alpha web", 4)]
    assert context["top_profiles"] == [("Alpha voice", 4)]
    assert text.count("<rect") >= 4 and 'id="usage-chart"' in text
    assert "<script" not in text.split('id="content-main"')[1]


def test_the_operator_chooses_an_organisation_first(client, operator):
    client.force_login(operator)

    response = client.get(reverse("admin:audit_tokengrant_dashboard"))

    assert "Choose an organisation" in response.content.decode()
