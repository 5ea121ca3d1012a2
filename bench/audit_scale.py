"""The audit trail at scale: one organisation with a million grants (plus a second org).

Seeds PostgreSQL with ``--grants`` issued grants whose tokens are all past expiry (plus 5%
denied and failed ones, interleaved in time as issuance writes them, and a smaller second
organisation), 25,000 distinct mixed-case end users an organisation and real key prefixes;
runs ``rollup_usage`` and then writes ``--tail`` grants in the last five minutes, the part
the rollups have not counted yet (production has up to a few minutes of it). Then reports,
as an auditor through Django's test ``Client``, p50 / p95 over ``--repeat`` requests, each
beside a baseline measured in the same run where there is one:

* the grants changelist, filtered (app + outcome, and with a week's date range) and searched
  (an end user's prefix typed in another case; a prefix only the other organisation has),
  against the same page with Django's stock behaviour (exact COUNT(*), DISTINCT date
  hierarchy, ``icontains`` search) — target < 300 ms;
* the dashboard at 30 days and at 24 hours (hourly) — target < 300 ms;
* the usage export: ``GET /api/v1/usage`` with a read key for 30 and 366 days, and the
  admin's usage page (366 days) — target < 300 ms;
* ``EXPLAIN ANALYZE`` of the slowest statement of the slowest page (and of any page over
  the target);
* ``expire_grants`` over every due row — target < 60 s, no statement over 1 s;
* a full CSV export's peak RSS, in a fresh process, against the process before it ran and
  against reading the same rows into a list — target < 200 MB;
* ``seal_audit`` and ``verify_audit`` over all of it.

    .venv/bin/python bench/audit_scale.py                    # 1,000,000 grants
    .venv/bin/python bench/audit_scale.py --grants 100000    # a quicker look
    .venv/bin/python bench/audit_scale.py --reuse            # skip seeding, reuse the DB
    .venv/bin/python bench/audit_scale.py --reuse --pages-only   # the pages alone
"""

import argparse
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def configure(database: str) -> None:
    from cryptography.fernet import Fernet

    os.environ.update(
        DJANGO_SETTINGS_MODULE="portal.settings",
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{database}",
        SECRET_KEY=os.environ.get("BENCH_SECRET_KEY") or secrets.token_urlsafe(40),
        ALLOWED_HOSTS="testserver,127.0.0.1",
        SECURE_SSL_REDIRECT="0",
        EPHEMERA_VAR_DIR=tempfile.mkdtemp(prefix="ephemera-audit-bench-"),
        FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        AUDIT_HMAC_KEY="bench-" + secrets.token_hex(16),
        LOG_LEVEL="ERROR",
    )
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()


def psql(*commands: str) -> None:
    args = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-q"]
    for command in commands:
        args += ["-c", command]
    subprocess.run(args, check=True, capture_output=True)


# Issuance writes a grant per attempt, ids rising with time and the outcomes interleaved:
# ``g`` is a grant's place in time, oldest first. Each end user is one of 25,000 per
# organisation (``u``), named ``<Name>.<n>@<domain>`` in the case people type them, so a
# search for a user's start matches a few dozen users; every grant carries its app's key.
SEED_SQL = """
INSERT INTO audit_tokengrant (
  public_id, organization_id, client_app_id, client_key_prefix, end_user, profile_id,
  profile_slug, profile_version, requested, request_body, outcome, error_code, detail,
  requested_at, issued_at, expire_time, new_session_expire_time, uses, upstream_latency_ms,
  lifecycle, request_id, ip, user_agent, token_fingerprint
)
SELECT
  gen_random_uuid(), %(org)s, (%(apps)s::bigint[])[1 + g %% 3],
  (%(keys)s::text[])[1 + g %% 3],
  (%(names)s::text[])[1 + u %% 20] || '.' || (u / 20) || '@' || (%(domains)s::text[])[1 + u %% 3],
  (%(profiles)s::bigint[])[1 + g %% 2], (%(slugs)s::text[])[1 + g %% 2], 1, '{}'::jsonb,
  CASE WHEN o = 'issued' THEN '{"uses": 1}'::jsonb END,
  o, CASE WHEN o = 'issued' THEN '' ELSE 'bench' END, '',
  at,
  CASE WHEN o = 'issued' THEN at END,
  CASE WHEN o = 'issued' THEN at + interval '30 minutes' END,
  CASE WHEN o = 'issued' THEN at + interval '1 minute' END,
  CASE WHEN o = 'issued' THEN 1 END, 40,
  CASE WHEN o = 'issued' THEN 'active' ELSE '' END,
  substr(md5(%(org)s || '-' || %(batch)s || '-' || g), 1, 32),
  ('203.0.113.' || (1 + g %% 250))::inet, 'bench',
  CASE WHEN o = 'issued' THEN md5(g::text || %(batch)s) || md5(g::text) ELSE '' END
FROM generate_series(1, %(n)s) AS g,
     LATERAL (SELECT (g::bigint * 7919) %% 25000 AS u,
                     CASE WHEN g %% 31 = 0 THEN 'denied_quota'
                          WHEN g %% 53 = 0 THEN 'upstream_error'
                          ELSE 'issued' END AS o,
                     now() - %(newest)s::interval
                         - ((%(n)s - g)::float / %(n)s) * %(span)s::interval AS at) AS t
"""

END_USER_NAMES = [
    "Alice", "bob", "CAROL", "dave", "Erin", "frank", "GRACE", "heidi", "Ivan", "judy",
    "Mallory", "niaj", "OLIVIA", "peggy", "Rupert", "sybil", "Trent", "victor", "Walter", "xena",
]  # fmt: skip
END_USER_DOMAINS = ["Example.com", "acme.io", "mail.TEST"]
# What the other organisation's end users start with: nothing in the big one does.
OTHER_ORG_PREFIX = "Partner-"


def seed_grants(org, *, n: int, batch: str, newest: str, span: str) -> None:
    """``n`` grants of ``org`` (its apps, their keys, its profiles), ``newest`` ago back over
    ``span``, in one INSERT … SELECT."""
    from django.db import connection

    from apps.clients.models import ClientApp, ClientKey
    from apps.policies.models import LiveConstraintProfile

    apps = list(ClientApp.objects.filter(organization=org).order_by("pk"))
    keys = [
        ClientKey.objects.filter(client_app=app, scope=ClientKey.Scope.ISSUE)
        .order_by("pk")
        .values_list("prefix", flat=True)
        .first()
        for app in apps
    ]
    profiles = list(LiveConstraintProfile.objects.filter(organization=org).order_by("pk"))
    names = END_USER_NAMES if org.slug == "big" else [OTHER_ORG_PREFIX + n for n in END_USER_NAMES]
    with connection.cursor() as cursor:
        cursor.execute(
            SEED_SQL,
            {
                "org": org.pk,
                "apps": [app.pk for app in apps],
                "keys": keys,
                "profiles": [profile.pk for profile in profiles],
                "slugs": [profile.slug for profile in profiles],
                "names": names,
                "domains": END_USER_DOMAINS,
                "batch": batch,
                "n": n,
                "newest": newest,
                "span": span,
            },
        )


def seed(total: int) -> dict:
    """Two organisations through the ORM (an issuing key per app), their grants with one
    INSERT … SELECT each."""
    from django.db import connection

    from apps.clients.models import ClientApp
    from apps.clients.services import client_key_create
    from apps.policies.models import LiveConstraintProfile
    from apps.tenants.models import Membership, Organization, Role, User

    made = {}
    for slug, size in (("big", total), ("other", max(total // 20, 1000))):
        org = Organization.objects.create(name=f"{slug} org", slug=slug, retention_days=3650)
        for n in range(3):
            app = ClientApp.objects.create(organization=org, name=f"{slug} app {n}")
            client_key_create(organization=org, client_app=app, actor=None, label="web")
        for n in range(2):
            LiveConstraintProfile.objects.create(
                organization=org,
                slug=f"{slug}-voice-{n}",
                name=f"{slug} voice {n}",
                model="gemini-2.0-flash-live-001",
                config={"response_modalities": ["AUDIO"]},
            )
        user = User.objects.create(username=f"auditor@{slug}.test", email=f"auditor@{slug}.test")
        Membership.objects.create(organization=org, user=user, role=Role.AUDITOR)
        # issued ``size``, plus about 1/31 denied and 1/53 failed among them in time
        seed_grants(org, n=size * 1000 // 949, batch="seed", newest="2 hours", span="89 days")
        made[slug] = org
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE audit_tokengrant")
    return made


@contextmanager
def statement_timer():
    """Every SQL statement's duration, so the slowest one can be reported."""
    from django.db import connection

    durations: list[float] = []

    def wrapper(execute, sql, params, many, context):
        start = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            durations.append(time.perf_counter() - start)

    with connection.execute_wrapper(wrapper):
        yield durations


TARGET_MS = 300


@dataclass
class Timing:
    """p50 and p95 of one page's requests, and its slowest SQL statement (to EXPLAIN)."""

    p50: float
    p95: float
    slowest_ms: float
    slowest_sql: str
    slowest_params: tuple
    sql_ms: float  # a request's statements, added up (median request)
    statements: int

    def __str__(self) -> str:
        return f"{self.p50:.0f} / {self.p95:.0f} ms"


def timed_gets(client, url: str, params: dict, repeat: int, headers: dict | None = None) -> Timing:
    """``repeat`` GETs of one page after one warm-up request (not counted)."""
    from django.db import connection

    slowest = [0.0, "", ()]
    spent: list[float] = []

    def wrapper(execute, sql, sql_params, many, context):
        start = time.perf_counter()
        try:
            return execute(sql, sql_params, many, context)
        finally:
            elapsed = time.perf_counter() - start
            spent.append(elapsed)
            if elapsed > slowest[0]:
                slowest[:] = [elapsed, sql, sql_params]

    client.get(url, params, headers=headers or {})
    times, sql_times, counts = [], [], []
    with connection.execute_wrapper(wrapper):
        for _ in range(repeat):
            spent.clear()
            start = time.perf_counter()
            response = client.get(url, params, headers=headers or {})
            if hasattr(response, "streaming_content"):
                b"".join(response.streaming_content)
            else:
                response.content  # noqa: B018 (read the body, as a browser would)
            times.append(time.perf_counter() - start)
            sql_times.append(sum(spent))
            counts.append(len(spent))
            assert response.status_code == 200, (url, params, response.status_code)
    p95 = statistics.quantiles(times, n=20, method="inclusive")[18] if len(times) > 1 else times[0]
    return Timing(
        statistics.median(times) * 1000,
        p95 * 1000,
        slowest[0] * 1000,
        slowest[1],
        slowest[2],
        statistics.median(sql_times) * 1000,
        round(statistics.median(counts)),
    )


def explain(timing: Timing) -> str:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of a page's slowest statement, with its parameters."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + timing.slowest_sql, timing.slowest_params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    return f"{connection.ops.compose_sql(timing.slowest_sql, timing.slowest_params)}\n{plan}"


@contextmanager
def stock_changelist():
    """Django's own behaviour for the same admin: exact counts, DISTINCT date queries and
    the stock ``icontains`` search over ``search_fields``."""
    from django.contrib import admin
    from django.core.paginator import Paginator
    from django.db.models import QuerySet

    from apps.audit import admin as audit_admin

    grant_admin = audit_admin.TokenGrantAdmin
    saved = (
        grant_admin.paginator,
        grant_admin.show_full_result_count,
        audit_admin.ProbedDatesQuerySet,
        grant_admin.get_search_results,
    )
    grant_admin.paginator, grant_admin.show_full_result_count = Paginator, True
    audit_admin.ProbedDatesQuerySet = QuerySet
    grant_admin.get_search_results = admin.ModelAdmin.get_search_results
    try:
        yield
    finally:
        (
            grant_admin.paginator,
            grant_admin.show_full_result_count,
            audit_admin.ProbedDatesQuerySet,
            grant_admin.get_search_results,
        ) = saved


def export_rss(database: str, slug: str, mode: str) -> tuple[float, float, int]:
    """(RSS before, peak RSS, bytes) of one full CSV export, in a fresh process."""
    code = f"""
import resource, sys
sys.path.insert(0, {str(ROOT)!r})
from bench.audit_scale import configure
configure({database!r})
from apps.audit import exports
from apps.audit.models import TokenGrant
from django.db.models import QuerySet
grants = TokenGrant.objects.filter(organization__slug={slug!r})
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
size = 0
if {mode!r} == "stream":
    for chunk in exports.grant_export_lines(grants, "csv"):
        size += len(chunk)
else:  # the naive way: every row in memory, then written
    rows = list(grants.values_list(*exports.EXPORT_FIELDS))
    size = sum(len(str(row)) for row in rows)
print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, size)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=os.environ
    ).stdout.split()
    before, peak, size = (int(value) for value in out[-3:])
    return before / 1024, peak / 1024, size


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--grants", type=int, default=1_000_000)
    parser.add_argument("--database", default="ephemera_audit_bench")
    parser.add_argument("--reuse", action="store_true", help="reuse a database seeded before")
    parser.add_argument("--repeat", type=int, default=15, help="requests a page (≥ 15)")
    parser.add_argument("--tail", type=int, default=3000, help="grants not rolled up yet")
    parser.add_argument(
        "--pages-only", action="store_true", help="skip expire, export, seal and verify"
    )
    args = parser.parse_args()

    if not args.reuse:
        psql(f"DROP DATABASE IF EXISTS {args.database}", f"CREATE DATABASE {args.database}")
    configure(args.database)
    from django.core.management import call_command
    from django.test import Client
    from django.urls import reverse
    from django.utils import timezone

    from apps.audit import services
    from apps.audit.models import TokenGrant
    from apps.audit.selectors import audit_chain_verify
    from apps.clients.models import ClientApp
    from apps.clients.services import client_key_create
    from apps.issuance import lifecycle
    from apps.tenants.models import Organization, User

    results: list[tuple[str, str, str]] = []

    def report(name: str, value: str, note: str = "") -> None:
        results.append((name, value, note))
        print(f"{name:<58} {value:>15}  {note}", flush=True)

    call_command("collectstatic", interactive=False, verbosity=0)  # the admin's pages need it
    if not args.reuse:
        call_command("migrate", verbosity=0)
        start = time.perf_counter()
        seed(args.grants)
        report("seed", f"{time.perf_counter() - start:.1f} s")
    big = Organization.objects.get(slug="big")
    total = TokenGrant.objects.filter(organization=big).count()
    report(
        "grants in the big org",
        f"{total:,}",
        f"+ {TokenGrant.objects.exclude(organization=big).count():,} in another",
    )

    with statement_timer() as durations:
        start = time.perf_counter()
        tally = services.RunTally()
        services.usage_rollup(tally=tally, now=timezone.now() + timedelta(minutes=2))
        elapsed = time.perf_counter() - start
    report(
        "rollup_usage" + ("" if args.reuse else " (first run)"),
        f"{elapsed:.1f} s",
        f"slowest statement {max(durations) * 1000:.0f} ms",
    )
    # What production has at any moment: the last minutes' grants, after the rollup's cursor.
    seed_grants(big, n=args.tail, batch=f"tail-{time.time()}", newest="0 s", span="5 minutes")
    report("grants after the rollup's cursor (tail)", f"{args.tail:,}", "the last 5 minutes")

    client = Client()
    client.force_login(User.objects.get(username="auditor@big.test"))
    changelist = reverse("admin:audit_tokengrant_changelist")
    app = ClientApp.objects.filter(organization=big).order_by("pk").first()
    today = timezone.now().astimezone(UTC).date()
    week = {"from": str(today - timedelta(days=37)), "to": str(today - timedelta(days=31))}
    pages: list[tuple[str, Timing]] = []
    stock_repeat = max(3, args.repeat // 3)

    def page(
        name: str, url: str, params: dict, *, stock: bool = False, via=client, **extra
    ) -> Timing:
        """One page measured (and beside Django's stock changelist if ``stock``), reported."""
        ours = timed_gets(via, url, params, args.repeat, **extra)
        pages.append((name, ours))
        notes = [] if ours.p50 < TARGET_MS else [f"OVER {TARGET_MS} ms"]
        if stock:
            with stock_changelist():
                theirs = timed_gets(client, url, params, stock_repeat)
            notes.append(f"stock Django {theirs} (×{theirs.p50 / ours.p50:.1f} at p50)")
        notes.append(f"SQL {ours.sql_ms:.0f} ms in {ours.statements} statements")
        report(f"{name} p50 / p95", str(ours), "; ".join(notes))
        return ours

    page("changelist", changelist, {}, stock=True)
    page(
        "changelist filtered (app + outcome)",
        changelist,
        {"app": app.pk, "outcome__exact": "issued"},
        stock=True,
    )
    page(
        "changelist filtered (app + outcome + a week)",
        changelist,
        {"app": app.pk, "outcome__exact": "issued", **week},
        stock=True,
    )
    term = "ALICE.123"  # stored as Alice.123…@…: 11 of 25,000 users
    matches = TokenGrant.objects.filter(organization=big, end_user__istartswith=term).count()
    page(f"changelist search q={term} ({matches:,} matches)", changelist, {"q": term}, stock=True)
    term = OTHER_ORG_PREFIX.lower()  # only the other organisation's end users start so
    matches = TokenGrant.objects.filter(organization=big, end_user__istartswith=term).count()
    elsewhere = TokenGrant.objects.filter(end_user__istartswith=term).count()
    page(
        f"changelist search q={term} ({matches} here, {elsewhere:,} in the other org)",
        changelist,
        {"q": term},
        stock=True,
    )

    dashboard = reverse("admin:audit_tokengrant_dashboard")
    page("dashboard 30 days", dashboard, {"range": "30d"})
    page("dashboard 24 hours (hourly)", dashboard, {"range": "24h"})

    raw_key = client_key_create(
        organization=big, client_app=app, actor=None, label="finance", scope="read_usage"
    )[1]
    bearer = {"Authorization": f"Bearer {raw_key}"}
    for days in (30, 366):
        span = {"from": str(today - timedelta(days=days - 1)), "to": str(today)}
        page(
            f"GET /api/v1/usage {days} days (read key)",
            "/api/v1/usage",
            span,
            via=Client(),
            headers=bearer,
        )
    page(
        "admin usage export 366 days (CSV)",
        reverse("admin:audit_tokengrant_usage"),
        {"first": str(today - timedelta(days=365)), "last": str(today)},
    )

    plans = []
    slowest = max(pages, key=lambda item: item[1].p50)
    for name, timing in pages:
        if timing.p50 >= TARGET_MS or (name, timing) == slowest:
            plans.append(
                f"-- {name}: p50 {timing.p50:.0f} ms; its slowest statement "
                f"{timing.slowest_ms:.0f} ms\n{explain(timing)}"
            )

    if not args.pages_only:
        due = TokenGrant.objects.filter(lifecycle="active", expire_time__lte=timezone.now()).count()
        with statement_timer() as durations:
            start = time.perf_counter()
            lifecycle.grants_expire(tally=services.RunTally())
            elapsed = time.perf_counter() - start
        report(
            f"expire_grants over {due:,} due rows",
            f"{elapsed:.1f} s",
            f"{len(durations)} statements, slowest {max(durations) * 1000:.0f} ms, "
            f"median {statistics.median(durations) * 1000:.1f} ms",
        )

        before, peak, size = export_rss(args.database, "big", "stream")
        _, naive_peak, _ = export_rss(args.database, "big", "list")
        report(
            "full CSV export, peak RSS",
            f"{peak:.0f} MB",
            f"{size / 2**20:.0f} MB written; process before {before:.0f} MB; "
            f"rows read into a list instead: {naive_peak:.0f} MB",
        )

        with statement_timer() as durations:
            start = time.perf_counter()
            seals = services.audit_seal_organization(
                organization=big, now=timezone.now() + timedelta(minutes=2)
            )
            elapsed = time.perf_counter() - start
        report(
            "seal_audit (all of it)",
            f"{elapsed:.1f} s",
            f"{seals} seals, slowest statement {max(durations) * 1000:.0f} ms",
        )
        start = time.perf_counter()
        verdict = audit_chain_verify(organization=big)
        elapsed = time.perf_counter() - start
        report(
            "verify_audit",
            f"{elapsed:.1f} s",
            f"{'OK' if verdict.ok else verdict.problem}; {verdict.grants:,} grants",
        )
    print("\n| measure | result | notes |\n|---|---|---|")
    for name, value, note in results:
        print(f"| {name} | {value} | {note} |")
    own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this process: {own_peak:.0f} MB")
    for plan in plans:
        print(f"\n{plan}")


if __name__ == "__main__":
    main()
