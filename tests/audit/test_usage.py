"""Usage for finance: per UTC day, app and profile, from the rollups and the grants after them;
``GET /api/v1/usage`` for auditors and read keys; the admin's CSV export."""

import csv
import io
import json
import random
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient
from django.urls import reverse
from django.utils import timezone

from apps.audit import selectors, services
from apps.audit.models import TokenGrant, UsageRollupCursor
from apps.audit.usage_csv import usage_csv
from apps.clients import services as client_services
from apps.clients.models import ClientKey
from apps.policies import services as policy_services
from apps.tenants.models import Role
from tests.factories import TokenGrantFactory

Outcome = TokenGrant.Outcome
COLUMN = {
    Outcome.ISSUED: "issued",
    Outcome.DENIED_QUOTA: "denied",
    Outcome.DENIED_POLICY: "denied",
    Outcome.UPSTREAM_ERROR: "failed",
    Outcome.ABANDONED: "failed",
}
HEADER = ["day", "app", "profile", "issued", "denied", "failed"]


def today() -> date:
    return timezone.now().astimezone(UTC).date()


def direct_count(organization, first: date, last: date, **filters) -> list[tuple]:
    """What the report must say, counted grant by grant: (day, app, profile, i, d, f)."""
    counts: dict[tuple, Counter] = {}
    grants = TokenGrant.objects.filter(organization=organization, **filters).select_related(
        "client_app", "profile"
    )
    for grant in grants:
        day = grant.requested_at.astimezone(UTC).date()
        if not first <= day <= last or grant.outcome == Outcome.PENDING:
            continue
        key = (
            day,
            grant.client_app.name if grant.client_app else None,
            grant.profile.slug if grant.profile else None,
        )
        counts.setdefault(key, Counter())[COLUMN[grant.outcome]] += 1
    return sorted(
        ((*key, c["issued"], c["denied"], c["failed"]) for key, c in counts.items()),
        key=lambda row: (row[0], row[1] or "", row[2] or ""),
    )


def reported(organization, first: date, last: date, **filters) -> list[tuple]:
    report = selectors.usage_report(organization=organization, first=first, last=last, **filters)
    rows = [(r.day, r.app, r.profile, r.issued, r.denied, r.failed) for r in report.rows]
    assert report.totals == {
        "issued": sum(r[3] for r in rows),
        "denied": sum(r[4] for r in rows),
        "failed": sum(r[5] for r in rows),
    }
    return rows


def random_grants(rng: random.Random, world, *, start: datetime, end: datetime, n: int, pending):
    """``n`` grants of the world's org asked for between ``start`` and ``end``, written in
    the order they were asked for (as issuance writes them): random apps (or a member, no
    app), profiles (or none), outcomes."""
    apps = [world.client_app, world.second_app, None]
    profiles = [world.profile, world.second_profile, None]
    outcomes = list(COLUMN) + ([Outcome.PENDING] if pending else [])
    moments = sorted(start + (end - start) * rng.random() for _ in range(n))
    grants = [
        TokenGrantFactory.build(
            organization=world.organization,
            client_app=rng.choice(apps),
            profile=rng.choice(profiles),
            outcome=rng.choice(outcomes),
            requested_at=moment,
        )
        for moment in moments
    ]
    TokenGrant.objects.bulk_create(grants)


@pytest.fixture
def worlds(two_orgs):
    """Alpha and Bravo, each with a second app and profile."""
    for world in two_orgs:
        slug = world.organization.slug
        world.second_profile = policy_services.profile_create(
            organization=world.organization,
            actor=None,
            slug=f"{slug}-text",
            name=f"{slug} text",
            model="gemini-2.0-flash-live-001",
            config={"response_modalities": ["TEXT"]},
        )
        world.second_app = client_services.client_app_create(
            organization=world.organization, actor=None, name=f"{slug} batch"
        )
    return two_orgs


def roll_up() -> None:
    services.usage_rollup(tally=services.RunTally(), now=timezone.now() + timedelta(minutes=2))


@pytest.mark.django_db
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_report_is_a_direct_count_of_the_grants(worlds, seed):
    """Rolled up, partly rolled up (a PENDING grant stops the rollup), and the newest not
    rolled up at all: each day, app, profile and outcome adds up to what the grants say."""
    rng = random.Random(seed)
    alpha, _ = worlds
    now = timezone.now()
    for world in worlds:
        random_grants(
            rng,
            world,
            start=now - timedelta(days=14),
            end=now - timedelta(days=4),
            n=60,
            pending=False,
        )
    roll_up()  # everything so far is counted in UsageDaily
    for world in worlds:
        random_grants(
            rng,
            world,
            start=now - timedelta(days=4),
            end=now - timedelta(days=1),
            n=40,
            pending=True,
        )
    roll_up()  # counted up to the first PENDING grant only
    for world in worlds:
        random_grants(
            rng, world, start=now - timedelta(days=1), end=now, n=30, pending=True
        )  # today's: not rolled up at all
    cursor = UsageRollupCursor.objects.get(organization=alpha.organization).last_grant_id
    assert TokenGrant.objects.filter(organization=alpha.organization, id__gt=cursor).count() > 30

    for _ in range(5):
        first = today() - timedelta(days=rng.randint(0, 16))
        last = min(today(), first + timedelta(days=rng.randint(0, 16)))
        for world in worlds:
            assert reported(world.organization, first, last) == direct_count(
                world.organization, first, last
            )
    first, last = today() - timedelta(days=20), today()
    assert reported(alpha.organization, first, last, client_app=alpha.second_app) == (
        direct_count(alpha.organization, first, last, client_app=alpha.second_app)
    )
    assert reported(alpha.organization, first, last, profile=alpha.profile) == direct_count(
        alpha.organization, first, last, profile=alpha.profile
    )
    names = {row[1] for row in reported(alpha.organization, first, last)} | {
        row[2] for row in reported(alpha.organization, first, last)
    }
    assert not {name for name in names if name and "bravo" in name}


@pytest.mark.django_db
def test_the_rollup_moving_meanwhile_counts_nothing_twice(worlds, monkeypatch):
    """The cursor is read around the counts; a rollup committing in between is read again."""
    alpha, _ = worlds
    now = timezone.now()
    random_grants(
        random.Random(9),
        alpha,
        start=now - timedelta(hours=3),
        end=now - timedelta(hours=2),
        n=20,
        pending=False,
    )
    expected = direct_count(alpha.organization, today() - timedelta(days=1), today())
    real_cursor = selectors._rollup_cursor
    calls = []

    def cursor_then_rollup(organization):
        through = real_cursor(organization)
        if not calls:
            roll_up()  # commits right after the first read of the cursor
        calls.append(through)
        return through

    monkeypatch.setattr(selectors, "_rollup_cursor", cursor_then_rollup)

    assert reported(alpha.organization, today() - timedelta(days=1), today()) == expected
    assert len(calls) == 3  # read, moved, read again


@pytest.mark.django_db
def test_app_names_that_look_like_formulas_are_neutralised_in_the_csv(two_orgs):
    alpha, _ = two_orgs
    app = client_services.client_app_create(
        organization=alpha.organization, actor=None, name='=HYPERLINK("x")'
    )
    TokenGrantFactory(organization=alpha.organization, client_app=app, profile=alpha.profile)

    report = selectors.usage_report(organization=alpha.organization, first=today(), last=today())
    rows = list(csv.reader(io.StringIO(usage_csv(report))))

    assert rows[0] == HEADER
    assert [today().isoformat(), '\'=HYPERLINK("x")', "alpha-voice", "1", "0", "0"] in rows


# --- the admin's page ------------------------------------------------------------------------


@pytest.fixture
def auditor(client, two_orgs):
    client.force_login(two_orgs[0].users[Role.AUDITOR])
    return client


def csv_rows(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(response.content.decode())))


@pytest.mark.django_db
def test_the_admin_page_downloads_the_csv(auditor, two_orgs):
    alpha, _ = two_orgs
    grant_day = alpha.grant.requested_at.astimezone(UTC).date()
    url = reverse("admin:audit_tokengrant_usage")

    page = auditor.get(url)
    listing = auditor.get(reverse("admin:audit_tokengrant_changelist"))
    download = auditor.get(url, {"first": grant_day.isoformat(), "last": grant_day.isoformat()})

    assert page.status_code == 200
    assert b'id="usage-export"' in page.content
    assert url in listing.content.decode()  # linked next to the dashboard
    assert download["Content-Type"] == "text/csv; charset=utf-8"
    assert f"usage-alpha-{grant_day}-{grant_day}.csv" in download["Content-Disposition"]
    assert csv_rows(download) == [
        HEADER,
        [grant_day.isoformat(), "Alpha web", "alpha-voice", "1", "0", "0"],
    ]


@pytest.mark.django_db
def test_the_admin_page_refuses_bad_ranges_and_other_orgs_apps(auditor, two_orgs):
    _, bravo = two_orgs
    url = reverse("admin:audit_tokengrant_usage")

    backwards = auditor.get(url, {"first": "2026-02-02", "last": "2026-02-01"})
    too_long = auditor.get(url, {"first": "2025-01-01", "last": "2026-01-02"})
    foreign = auditor.get(
        url, {"first": "2026-02-01", "last": "2026-02-01", "app": bravo.client_app.pk}
    )

    for response in (backwards, too_long, foreign):
        assert response.status_code == 200  # the form again, with the error
        assert response["Content-Type"].startswith("text/html")
        assert response.context["form"].errors
    assert bravo.client_app.name not in foreign.content.decode()


@pytest.mark.django_db
def test_a_member_has_no_usage_page(client, two_orgs):
    client.force_login(two_orgs[0].users[Role.MEMBER])

    response = client.get(reverse("admin:audit_tokengrant_usage"))

    assert response.status_code == 302  # the admin sends them away


# --- GET /api/v1/usage ------------------------------------------------------------------------


def bearer(raw_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw_key}"}


def read_key(world) -> str:
    _, raw = client_services.client_key_create(
        organization=world.organization,
        client_app=world.client_app,
        actor=None,
        label="finance",
        scope=ClientKey.Scope.READ_USAGE,
    )
    return raw


def usage_url(first: date, last: date, **extra) -> str:
    params = "&".join(f"{k}={v}" for k, v in {"from": first, "to": last, **extra}.items())
    return f"/api/v1/usage?{params}"


def grant_day(world) -> date:
    return world.grant.requested_at.astimezone(UTC).date()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_an_auditor_session_reads_its_orgs_usage(two_orgs):
    alpha, _ = two_orgs
    client = AsyncClient()
    await client.aforce_login(alpha.users[Role.AUDITOR])
    day = grant_day(alpha)

    response = await client.get(usage_url(day, day))

    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    assert response.json() == {
        "from": day.isoformat(),
        "to": day.isoformat(),
        "rows": [
            {
                "day": day.isoformat(),
                "app": "Alpha web",
                "profile": "alpha-voice",
                "issued": 1,
                "denied": 0,
                "failed": 0,
            }
        ],
        "totals": {"issued": 1, "denied": 0, "failed": 0},
    }


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_read_key_reads_its_orgs_usage_as_csv(two_orgs):
    alpha, _ = two_orgs
    raw = await sync_to_async(read_key)(alpha)
    await sync_to_async(TokenGrantFactory)(
        organization=alpha.organization,
        client_app=alpha.client_app,
        profile=alpha.profile,
        outcome=Outcome.DENIED_QUOTA,
        requested_at=alpha.grant.requested_at,
    )
    day = grant_day(alpha)

    response = await AsyncClient().get(
        usage_url(day, day, app="Alpha%20web", format="csv"), headers=bearer(raw)
    )
    by_id = await AsyncClient().get(
        usage_url(day, day, app=alpha.client_app.pk, profile="alpha-voice"), headers=bearer(raw)
    )

    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert f"usage-alpha-{day}-{day}.csv" in response["Content-Disposition"]
    assert csv_rows(response) == [
        HEADER,
        [day.isoformat(), "Alpha web", "alpha-voice", "1", "1", "0"],
    ]
    assert by_id.json()["totals"] == {"issued": 1, "denied": 1, "failed": 0}


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_bravos_read_key_sees_bravos_usage_only(two_orgs):
    alpha, bravo = two_orgs
    raw = await sync_to_async(read_key)(bravo)
    first, last = min(grant_day(alpha), grant_day(bravo)), today()

    response = await AsyncClient().get(usage_url(first, last), headers=bearer(raw))
    alpha_app = await AsyncClient().get(
        usage_url(first, last, app=alpha.client_app.pk), headers=bearer(raw)
    )

    assert response.status_code == 200
    assert [(row["app"], row["profile"]) for row in response.json()["rows"]] == [
        ("Bravo web", "bravo-voice")
    ]
    assert alpha_app.status_code == 400  # Alpha's app is no app of Bravo's
    assert alpha_app.json()["error"]["code"] == "invalid_request"
    assert "Alpha web" not in alpha_app.content.decode()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_an_issue_key_a_member_and_nobody_are_refused(two_orgs):
    alpha, _ = two_orgs
    day = today()
    member = AsyncClient()
    await member.aforce_login(alpha.users[Role.MEMBER])

    with_issue_key = await AsyncClient().get(
        usage_url(day, day), headers=bearer(alpha.raw_client_key)
    )
    as_member = await member.get(usage_url(day, day))
    anonymous = await AsyncClient().get(usage_url(day, day))
    bad_key = await AsyncClient().get(usage_url(day, day), headers=bearer("eph_nope"))

    assert with_issue_key.status_code == 403
    assert with_issue_key.json()["error"]["code"] == "forbidden"
    assert as_member.status_code == 403
    assert as_member.json()["error"]["code"] == "forbidden"
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthenticated"
    assert bad_key.status_code == 401


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
@pytest.mark.parametrize(
    "query",
    [
        "to=2026-01-01",  # no from
        "from=2026-02-30&to=2026-03-01",  # no such day
        "from=01/02/2026&to=2026-03-01",  # not YYYY-MM-DD
        "from=2026-03-02&to=2026-03-01",  # backwards
        "from=2025-01-01&to=2026-01-02",  # 367 days
        "from=2026-01-01&to=2026-01-02&format=xml",
        "from=2026-01-01&to=2026-01-02&app=nothing",
        "from=2026-01-01&to=2026-01-02&profile=nothing",
    ],
)
async def test_bad_parameters_are_invalid_requests(two_orgs, query):
    alpha, _ = two_orgs
    raw = await sync_to_async(read_key)(alpha)

    response = await AsyncClient().get(f"/api/v1/usage?{query}", headers=bearer(raw))

    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"]["code"] == "invalid_request"
    assert body["error"]["message"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_full_year_is_allowed_and_the_calendars_ends_are_no_error(two_orgs):
    alpha, _ = two_orgs
    raw = await sync_to_async(read_key)(alpha)
    last = today()

    response = await AsyncClient().get(
        usage_url(last - timedelta(days=365), last), headers=bearer(raw)
    )
    last_day = await AsyncClient().get(usage_url(date.max, date.max), headers=bearer(raw))
    first_day = await AsyncClient().get(usage_url(date.min, date.min), headers=bearer(raw))

    assert response.status_code == 200
    assert response.json()["totals"]["issued"] == 1
    assert last_day.status_code == first_day.status_code == 200
    assert last_day.json()["rows"] == first_day.json()["rows"] == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_openapi_document_describes_usage(two_orgs):
    response = await AsyncClient().get("/api/v1/openapi.json")

    operation = response.json()["paths"]["/api/v1/usage"]["get"]
    assert operation["summary"]
    assert {p["name"] for p in operation["parameters"]} == {
        "from",
        "to",
        "app",
        "profile",
        "format",
    }
    assert set(operation["responses"]["200"]["content"]) == {"application/json", "text/csv"}
    assert set(operation["responses"]) >= {"200", "400", "401", "403"}
    schema = response.json()["components"]["schemas"]["UsageOut"]
    assert set(schema["properties"]) == {"from", "to", "rows", "totals"}
    assert json.dumps(operation)  # renders
