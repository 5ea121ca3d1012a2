"""The auditor's console: read everything of their org, export it, change nothing."""

import csv
import html
import io
import json
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

import pytest
from django.db import connection
from django.db.models import QuerySet
from django.test import AsyncClient, Client
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from apps.audit import admin as audit_admin
from apps.audit import selectors, services
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
    assert listed(auditor.get(url, {"q": denied.end_user[:-1]})) == [denied]  # a prefix
    assert listed(auditor.get(url, {"q": denied.end_user[1:]})) == []  # not a substring scan
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
    # What was typed comes back in the box, once; nothing else names Bravo or its grant.
    assert text.count(token_for(bravo.grant)) == 1
    assert "bravo" not in text.replace(token_for(bravo.grant), "").lower()


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
    tables = {table.by: table for table in context["tables"]}
    assert [(row.label, row.issued, row.refused) for row in tables["client_app"].rows] == [
        ("Alpha web", 4, 2)
    ]
    assert [(row.label, row.issued) for row in tables["profile"].rows] == [("Alpha voice", 4)]
    assert text.count("<rect") >= 4 and 'id="usage-chart"' in text
    assert "<script" not in text.split('id="content-main"')[1]


def test_the_operator_chooses_an_organisation_first(client, operator):
    client.force_login(operator)

    response = client.get(reverse("admin:audit_tokengrant_dashboard"))

    assert "Choose an organisation" in response.content.decode()


# --- the grants list for people (issue 19): columns, chips, search, look-up -----------------


def row_of(response, grant) -> str:
    """The HTML of the grant's row in the list (the row links to the grant's page)."""
    text = response.content.decode()
    link = reverse("admin:audit_tokengrant_change", args=[grant.pk])
    rows = [row for row in text.split("<tr")[1:] if f'href="{link}"' in row]
    assert len(rows) == 1, f"the list shows {len(rows)} rows for {grant}"
    return rows[0].split("</tr>")[0]


def test_the_list_shows_every_column_time_with_seconds_and_a_short_id(auditor, two_orgs):
    alpha, _ = two_orgs
    asked = datetime(2026, 10, 5, 9, 4, 7, tzinfo=UTC)
    denied = TokenGrantFactory(
        organization=alpha.organization,
        client_app=alpha.client_app,
        client_key_prefix="AbCdEf123456",
        profile_slug="alpha-voice",
        profile_version=3,
        end_user="Alice@acme.example",
        outcome="denied_quota",
        error_code="quota_exceeded",
        lifecycle="",
        requested_at=asked,
        expire_time=None,
    )

    response = auditor.get(reverse(CHANGELIST))
    thead = response.content.decode().split("<thead>")[1].split("</thead>")[0]
    headers = [
        name.lower() for name in re.findall(r'class="text">(?:<a [^>]*>|<span>)([^<]*)<', thead)
    ]
    row = row_of(response, denied)
    issued = row_of(response, alpha.grant)

    assert headers == [
        "time", "outcome", "app", "key", "profile", "end user", "expires", "error", "grant id",
    ]  # fmt: skip
    assert '<time class="" datetime="2026-10-05T09:04:07+00:00"' in row
    assert "2026-10-05 09:04:07 UTC" in row  # seconds, and which zone (UTC until the script)
    assert '<span class="outcome outcome-denied_quota">Denied: quota</span>' in row
    assert "Alpha web" in row and "<code>AbCdEf123456</code>" in row
    assert 'alpha-voice<span class="profile-version">@3</span>' in row
    assert "Alice@acme.example" in row and "<code>quota_exceeded</code>" in row
    full = str(denied.public_id)
    assert f'<code title="{full}">{full[:8]}</code>' in row
    assert f">{full}<" not in row  # the full id is on the grant's own page
    expires = alpha.grant.expire_time.astimezone(UTC)
    assert f'datetime="{expires.isoformat(timespec="seconds")}"' in issued
    assert 'class="lifecycle">Active<' in issued
    assert 'src="/static/ephemera/local-time.js"' in response.content.decode()

    page = auditor.get(reverse("admin:audit_tokengrant_change", args=[denied.pk]))
    assert full in page.content.decode()


def test_filter_chips_name_each_active_filter_and_remove_only_it(auditor, two_orgs):
    alpha, _ = two_orgs
    url = reverse(CHANGELIST)
    params = {
        "outcome__exact": "denied_quota",
        "app": str(alpha.client_app.pk),
        "q": "alice",
        "from": "2026-10-01",
        "requested_at__year": "2026",
    }

    response = auditor.get(url, params)

    chips = {chip.label: chip.remove_url for chip in response.context["filter_chips"]}
    removed = {
        "Search: alice": "q",
        "Client app: Alpha web": "app",
        "Outcome: Denied: quota": "outcome__exact",
        "Requested from 2026-10-01 (UTC)": "from",
        "Requested in 2026": "requested_at__year",
    }
    assert set(chips) == set(removed)
    for label, name in removed.items():
        left = dict(parse_qsl(chips[label].lstrip("?")))
        assert left == {key: value for key, value in params.items() if key != name}, label
        assert f'href="{escape(chips[label])}"' in response.content.decode()
    assert auditor.get(url).context["filter_chips"] == []

    # Following a chip's link drops that filter and keeps the rest.
    denied = TokenGrantFactory(organization=alpha.organization, outcome="denied_quota")
    narrowed = auditor.get(url + f"?outcome__exact=denied_quota&q={denied.end_user}")
    assert listed(narrowed) == [denied]
    search_chip = next(c for c in narrowed.context["filter_chips"] if c.label.startswith("Search"))
    assert listed(auditor.get(url + search_chip.remove_url)) == [denied]  # still denied only
    outcome_chip = next(c for c in narrowed.context["filter_chips"] if c.label.startswith("Outc"))
    assert listed(auditor.get(url + outcome_chip.remove_url)) == [denied]  # still the search


def test_search_finds_end_users_and_key_prefixes_in_any_case(auditor, two_orgs):
    alpha, _ = two_orgs
    grant = TokenGrantFactory(
        organization=alpha.organization,
        end_user="Alice@acme.example",
        client_key_prefix="AbCdEf123456",
    )
    url = reverse(CHANGELIST)

    for term in ("alice", "ALICE@ACME.EXAMPLE", "  Alice@acme  ", "abcdef", "ABCDEF123456"):
        assert listed(auditor.get(url, {"q": term})) == [grant], term
    # A whole key typed in: matched by its prefix, the secret part compared with nothing.
    assert listed(auditor.get(url, {"q": "eph_abcdef123456_" + "s" * 40})) == [grant]
    for term in ("lice", "acme.example", "cdef12"):  # prefixes, not substrings
        assert listed(auditor.get(url, {"q": term})) == [], term


def test_search_finds_grant_and_request_ids_by_prefix(auditor, two_orgs):
    alpha, _ = two_orgs
    grant = TokenGrantFactory(organization=alpha.organization, request_id="Req-7f3a-0001")
    public_id = str(grant.public_id)
    url = reverse(CHANGELIST)

    for term in (public_id, public_id[:8], public_id[:8].upper(), public_id[:13], public_id[:4]):
        assert grant in listed(auditor.get(url, {"q": term})), term
    assert listed(auditor.get(url, {"q": public_id[:13].replace("-", "")})) == [grant]
    assert listed(auditor.get(url, {"q": "Req-7f3a"})) == [grant]
    assert listed(auditor.get(url, {"q": "7f3a-0001"})) == []  # a prefix, not a substring


def test_no_search_or_look_up_ever_finds_another_organisations_grant(auditor, two_orgs):
    alpha, bravo = two_orgs
    theirs = TokenGrantFactory(
        organization=bravo.organization,
        end_user="Alice@acme.example",
        client_key_prefix="ZyXwVu987654",
        request_id="shared-request",
    )
    ours = TokenGrantFactory(
        organization=alpha.organization, end_user="alice@acme.example", request_id="other"
    )
    url = reverse(CHANGELIST)

    assert listed(auditor.get(url, {"q": "alice"})) == [ours]
    for term in (
        "zyxwvu",
        "shared-request",
        str(theirs.public_id),
        str(theirs.public_id)[:8],
        bravo.grant.end_user,
        bravo.grant.request_id,
    ):
        assert theirs not in listed(auditor.get(url, {"q": term})), term
        assert bravo.grant not in listed(auditor.get(url, {"q": term})), term
    lookup = reverse("admin:audit_tokengrant_lookup")
    for pasted in (token_for(theirs), token_for(theirs).removeprefix("auth_tokens/")):
        response = auditor.post(lookup, {"token": pasted})
        assert response.status_code == 200, pasted  # no redirect to a grant page
    foreign = auditor.get(reverse("admin:audit_tokengrant_change", args=[theirs.pk]))
    missing = auditor.get(reverse("admin:audit_tokengrant_change", args=[theirs.pk + 1000]))
    assert (foreign.status_code, foreign["Location"]) == (missing.status_code, missing["Location"])


def test_look_up_takes_a_bare_token_and_keeps_what_was_typed(auditor, two_orgs):
    alpha, _ = two_orgs
    url = reverse("admin:audit_tokengrant_lookup")
    token = token_for(alpha.grant)
    opened = reverse("admin:audit_tokengrant_change", args=[alpha.grant.pk])

    for pasted in (
        token.removeprefix("auth_tokens/"),  # what client code often keeps
        f"  {token.removeprefix('auth_tokens/')}\n",
        f'"{token}"',  # copied out of JSON
        token[:20] + "\n" + token[20:],  # a wrapped paste
    ):
        found = auditor.post(url, {"token": pasted})
        assert (found.status_code, found.get("Location")) == (302, opened), repr(pasted)

    typo = token.removeprefix("auth_tokens/") + "x"
    missed = auditor.post(url, {"token": typo})
    text = missed.content.decode()
    assert missed.status_code == 200
    assert "No grant of Alpha Org matches that token." in text
    assert f">{typo}</textarea>" in text  # to correct, not to paste again


def test_look_up_is_a_csrf_protected_post_never_a_url(two_orgs):
    alpha, _ = two_orgs
    client = Client(enforce_csrf_checks=True)
    client.force_login(alpha.users[Role.AUDITOR])
    url = reverse("admin:audit_tokengrant_lookup")
    token = token_for(alpha.grant)

    form = client.get(url).content.decode()
    assert 'method="post" id="token-lookup"' in form and "csrfmiddlewaretoken" in form
    assert client.get(url, {"token": token}).status_code == 200  # a GET looks nothing up
    assert token not in client.get(url, {"token": token}).content.decode()
    assert client.post(url, {"token": token}).status_code == 403  # no CSRF token


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the search indexes are checked on PostgreSQL"
)
def test_each_search_is_answered_from_its_index_on_postgresql(two_orgs):
    """EXPLAIN of each part of the search names its index (sequential scans off, so the
    plan does not depend on the table's size)."""
    alpha, bravo = two_orgs
    TokenGrant.objects.bulk_create(
        TokenGrantFactory.build(
            organization=organization,
            end_user=f"user-{n}@example.test",
            client_key_prefix=f"Key{n:09d}",
            request_id=f"req-{organization.slug}-{n:06d}",
        )
        for organization in (alpha.organization, bravo.organization)
        for n in range(2000)
    )
    grants = TokenGrant.objects.filter(organization=alpha.organization).order_by()

    def plan(queryset) -> str:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE audit_tokengrant")
            cursor.execute("SET LOCAL enable_seqscan = off")
            return queryset.explain()

    for lookup, index in (
        ({"end_user__istartswith": "User-12"}, "grant_end_user_search_idx"),
        ({"client_key_prefix__istartswith": "key0000001"}, "grant_key_prefix_search_idx"),
        ({"request_id__startswith": "req-alpha-0001"}, "grant_request_id_search_idx"),
    ):
        assert index in plan(grants.filter(**lookup)), lookup
    everything = plan(grants.filter(selectors.grant_search_condition("deadbeef")))
    for index in (
        "grant_end_user_search_idx",
        "grant_key_prefix_search_idx",
        "grant_request_id_search_idx",
        "audit_tokengrant_public_id_key",
    ):
        assert index in everything, everything


# --- the dashboard: current, by range, and every number a link to its grants ------------------

DASHBOARD = "admin:audit_tokengrant_dashboard"


def _links(text: str, pattern: str) -> list[str]:
    return [html.unescape(href) for href in re.findall(pattern, text)]


def _bar_links(text: str) -> list[str]:
    return _links(text, r'<a class="bar" href="([^"]+)"')


def _row_links(text: str, element_id: str) -> dict[str, str]:
    """A breakdown table's rows: the label shown and where it leads."""
    body = text.split(f'id="{element_id}"')[1].split("</tbody>")[0]
    return {
        html.unescape(label): html.unescape(href)
        for href, label in re.findall(r'<a href="([^"]+)">([^<]+)</a>', body)
    }


@pytest.fixture
def busy_day(two_orgs):
    """Alpha's and Bravo's grants in three recent hours (Bravo's at the same moments)."""
    alpha, bravo = two_orgs
    # alpha.grant's hour, not the clock's: the hour may have ended since it was written
    hour = alpha.grant.requested_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    made = {}
    for back, outcome in [(1, "issued"), (1, "denied_quota"), (3, "issued"), (5, "upstream_error")]:
        at = hour - timedelta(hours=back) + timedelta(minutes=7)
        for world in two_orgs:
            grant = TokenGrantFactory(
                organization=world.organization,
                client_app=world.client_app,
                profile=world.profile,
                client_key_prefix=world.client_key.prefix,
                end_user=f"{world.organization.slug}-caller-{back}",
                outcome=outcome,
                requested_at=at,
                lifecycle="active" if outcome == "issued" else "",
            )
            made.setdefault(world.organization.slug, []).append(grant)
    return alpha, bravo, hour, made


def test_a_grant_just_written_counts_before_any_task_runs(auditor, two_orgs):
    alpha, _ = two_orgs
    before = auditor.get(reverse(DASHBOARD)).context["totals"]["issued"]
    TokenGrantFactory(organization=alpha.organization, client_app=alpha.client_app)

    response = auditor.get(reverse(DASHBOARD))

    assert response.context["totals"]["issued"] == before + 1
    assert response.context["active_now"] == before + 1
    assert not services.UsageDaily.objects.filter(organization=alpha.organization).exists()


def test_the_range_picker_switches_between_hours_and_days(auditor, busy_day):
    picked = {
        name: auditor.get(reverse(DASHBOARD), {"range": name}).context
        for name in ["24h", "7d", "30d", "90d", "a year"]
    }

    assert [len(picked[name]["buckets"]) for name in picked] == [24, 7, 30, 90, 30]
    assert picked["24h"]["span"].hourly and not picked["7d"]["span"].hourly
    assert picked["a year"]["span"].name == "30d"  # anything else: the default
    # alpha.grant (now) plus the busy day's four; the same in each range
    assert {picked[name]["totals"]["issued"] for name in picked} == {3}
    text = auditor.get(reverse(DASHBOARD), {"range": "24h"}).content.decode()
    assert 'id="range-24h" aria-current="page"' in text
    assert "<script" not in text.split('id="content-main"')[1]
    assert re.search(r'<text class="y-value"[^>]*>2</text>', text)  # the axis has numbers
    assert re.search(r'<text class="x-label"[^>]*>\d\dh</text>', text)  # and hours


def test_each_bar_opens_exactly_its_hours_grants(auditor, busy_day):
    _, bravo, hour, made = busy_day
    text = auditor.get(reverse(DASHBOARD), {"range": "24h"}).content.decode()
    bars = _bar_links(text)

    assert len(bars) == 4  # three busy hours and the current one (alpha.grant)
    opened = {}
    for href in bars:
        params = dict(parse_qsl(href.split("?", 1)[1]))
        assert set(params) == {"hour"}
        opened[params["hour"]] = set(listed(auditor.get(href)))
    for back in (1, 3, 5):
        start = (hour - timedelta(hours=back)).strftime("%Y-%m-%dT%H")
        expected = {g for g in made["alpha"] if g.requested_at.hour == (hour.hour - back) % 24}
        assert opened[start] == expected
    assert not any(g.organization_id == bravo.organization.pk for s in opened.values() for g in s)


def test_a_day_bar_opens_that_days_grants(auditor, two_orgs):
    alpha, _ = two_orgs
    day = (timezone.now() - timedelta(days=3)).astimezone(UTC)
    old = [TokenGrantFactory(organization=alpha.organization, requested_at=day) for _ in range(2)]
    services.usage_rollup(tally=services.RunTally(), now=timezone.now() + timedelta(minutes=2))
    text = auditor.get(reverse(DASHBOARD), {"range": "7d"}).content.decode()

    (bar,) = [href for href in _bar_links(text) if f"from={day:%Y-%m-%d}" in href]

    assert dict(parse_qsl(bar.split("?", 1)[1])) == {"from": f"{day:%F}", "to": f"{day:%F}"}
    assert set(listed(auditor.get(bar))) == set(old)


def test_breakdown_rows_open_exactly_their_grants_and_never_bravos(auditor, busy_day):
    alpha, bravo, _, made = busy_day
    text = auditor.get(reverse(DASHBOARD), {"range": "24h"}).content.decode()
    mine = [*made["alpha"], alpha.grant]

    apps = _row_links(text, "top-apps")
    profiles = _row_links(text, "top-profiles")
    keys = _row_links(text, "top-keys")
    users = _row_links(text, "top-end-users")

    assert set(listed(auditor.get(apps["Alpha web"]))) == set(mine)
    assert set(listed(auditor.get(profiles["Alpha voice"]))) == set(mine)
    (key_link,) = keys.values()
    assert f"key_prefix={alpha.client_key.prefix}" in key_link
    assert set(listed(auditor.get(key_link))) == set(mine)
    assert set(listed(auditor.get(users["alpha-caller-1"]))) == {
        g for g in mine if g.end_user == "alpha-caller-1"
    }
    assert "app=" in apps["Alpha web"] and "profile=" in profiles["Alpha voice"]
    assert "end_user=alpha-caller-1" in users["alpha-caller-1"]
    assert "bravo" not in text.lower()
    # Bravo's own app id in the filter gives Alpha's auditor nothing of Bravo's.
    foreign = apps["Alpha web"].replace(f"app={alpha.client_app.pk}", f"app={bravo.client_app.pk}")
    assert not any(g.organization_id == bravo.organization.pk for g in listed(auditor.get(foreign)))


def test_the_totals_open_their_grants(auditor, busy_day):
    context = auditor.get(reverse(DASHBOARD), {"range": "24h"}).context

    denied = listed(auditor.get(context["total_links"]["denied"]))
    errors = listed(auditor.get(context["total_links"]["errors"]))
    issued = listed(auditor.get(context["total_links"]["issued"]))
    live = listed(auditor.get(context["active_href"]))

    assert [g.outcome for g in denied] == ["denied_quota"]
    assert [g.outcome for g in errors] == ["upstream_error"]
    assert len(issued) == context["totals"]["issued"] == 3
    assert set(live) == {g for g in issued if g.expire_time > timezone.now()}


def test_show_all_lifts_the_top_ten_and_stays_bounded(auditor, two_orgs):
    alpha, _ = two_orgs
    now = timezone.now()
    TokenGrant.objects.bulk_create(
        TokenGrant(
            organization=alpha.organization,
            end_user=f"caller-{n:02d}",
            outcome="issued",
            requested_at=now - timedelta(minutes=n + 1),
        )
        for n in range(14)
    )

    top = auditor.get(reverse(DASHBOARD), {"range": "24h"})
    (show_all,) = _links(top.content.decode(), r'<a href="([^"]+)" id="show-all-end_user"')
    every = auditor.get(reverse(DASHBOARD) + show_all)

    users = {table.by: table for table in top.context["tables"]}["end_user"]
    assert len(users.rows) == 10 and users.more
    assert dict(parse_qsl(show_all[1:].split("#")[0])) == {"range": "24h", "all": "end_user"}
    shown = {table.by: table for table in every.context["tables"]}["end_user"]
    assert len(shown.rows) == 15 and not shown.more  # 14 callers and alpha.grant's end user
    assert every.context["span"].name == "24h"


def test_keys_and_end_users_over_days_are_counted_when_asked(auditor, two_orgs):
    """The rollups count apps and profiles, not keys or end users: over days those tables
    would read every grant of the range, so the page offers to count them instead."""
    alpha, _ = two_orgs
    page = auditor.get(reverse(DASHBOARD), {"range": "90d"})
    text = page.content.decode()
    tables = {table.by: table for table in page.context["tables"]}

    assert tables["client_app"].rows and tables["profile"].rows
    assert tables["key"].on_request and tables["end_user"].on_request
    assert tables["key"].rows == tables["end_user"].rows == []
    (count_users,) = _links(text, r'<a href="([^"]+)" id="count-end_user"')
    counted = auditor.get(reverse(DASHBOARD) + count_users)
    users = {table.by: table for table in counted.context["tables"]}["end_user"]
    assert [row.label for row in users.rows] == [alpha.grant.end_user]
    assert counted.context["span"].name == "90d"


def test_only_auditors_and_up_see_the_dashboard(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.MEMBER])

    response = client.get(reverse(DASHBOARD))

    assert response.status_code in (302, 403)
    assert "Alpha web" not in response.content.decode()


@pytest.mark.parametrize(
    "params",
    [
        {"hour": "yesterday"},
        {"hour": "2026-12-06T25"},
        {"hour": "2026-12-06T08", "hours": "0"},
        {"hours": "3"},
        {"outcomes": "pending"},
        {"live": "yes"},
        {"end_user": "x" * 201},
    ],
)
def test_the_dashboards_list_parameters_refuse_nonsense_in_words(auditor, params):
    response = auditor.get(reverse(CHANGELIST), params, follow=True)

    assert response.redirect_chain[0][0].endswith("?e=1")
    assert "not valid" in response.content.decode()


def test_the_grants_page_gives_its_times_to_the_second(auditor, two_orgs):
    alpha, _ = two_orgs
    grant = TokenGrantFactory(
        organization=alpha.organization, requested_at=datetime(2026, 10, 5, 9, 4, 7, tzinfo=UTC)
    )

    text = auditor.get(reverse("admin:audit_tokengrant_change", args=[grant.pk])).content.decode()

    assert '<time class="" datetime="2026-10-05T09:04:07+00:00"' in text
    assert '<time class="" datetime="2026-10-05T09:34:07+00:00"' in text  # expires
    assert 'src="/static/ephemera/local-time.js"' in text
