"""The audit trail at scale: one organisation with a million grants (plus a second org).

Seeds PostgreSQL with ``--grants`` issued grants whose tokens are all past expiry (plus 5%
denied and failed ones and a smaller second organisation), then reports, each beside a
baseline measured in the same run:

* the grants changelist and a filtered one, as an auditor, against the same page with
  Django's stock behaviour (exact COUNT(*), DISTINCT date hierarchy) — target < 300 ms;
* the dashboard (after ``rollup_usage``) — target < 300 ms;
* ``expire_grants`` over every due row — target < 60 s, no statement over 1 s;
* a full CSV export's peak RSS, in a fresh process, against the process before it ran and
  against reading the same rows into a list — target < 200 MB;
* ``seal_audit`` and ``verify_audit`` over all of it.

    .venv/bin/python bench/audit_scale.py                    # 1,000,000 grants
    .venv/bin/python bench/audit_scale.py --grants 100000    # a quicker look
    .venv/bin/python bench/audit_scale.py --reuse            # skip seeding, reuse the DB
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
from datetime import timedelta
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


SEED_SQL = """
INSERT INTO audit_tokengrant (
  public_id, organization_id, client_app_id, client_key_prefix, end_user, profile_id,
  profile_slug, profile_version, requested, request_body, outcome, error_code, detail,
  requested_at, issued_at, expire_time, new_session_expire_time, uses, upstream_latency_ms,
  lifecycle, request_id, user_agent, token_fingerprint
)
SELECT
  gen_random_uuid(), %(org)s, (ARRAY[%(apps)s])[1 + g %% 3], 'benchkey0000',
  'user-' || (g %% 5000), (ARRAY[%(profiles)s])[1 + g %% 2], 'bench-voice', 1, '{}'::jsonb,
  CASE WHEN %(outcome)s = 'issued' THEN '{"uses": 1}'::jsonb END,
  %(outcome)s, CASE WHEN %(outcome)s = 'issued' THEN '' ELSE 'bench' END, '',
  at, at, at + interval '30 minutes', at + interval '1 minute', 1, 40,
  CASE WHEN %(outcome)s = 'issued' THEN 'active' ELSE '' END,
  'req-' || g, 'bench',
  CASE WHEN %(outcome)s = 'issued' THEN md5(g::text || %(outcome)s) || md5(g::text) ELSE '' END
FROM generate_series(1, %(n)s) AS g,
     LATERAL (SELECT now() - interval '2 hours'
                     - (g::float / %(n)s) * interval '89 days' AS at) AS t
"""


def seed(total: int) -> dict:
    """Two organisations through the ORM, their grants with one INSERT … SELECT each."""
    from django.db import connection

    from apps.clients.models import ClientApp
    from apps.policies.models import LiveConstraintProfile
    from apps.tenants.models import Membership, Organization, Role, User

    made = {}
    for slug, size in (("big", total), ("other", max(total // 20, 1000))):
        org = Organization.objects.create(name=f"{slug} org", slug=slug, retention_days=3650)
        apps = [
            ClientApp.objects.create(organization=org, name=f"{slug} app {n}") for n in range(3)
        ]
        profiles = [
            LiveConstraintProfile.objects.create(
                organization=org,
                slug=f"{slug}-voice-{n}",
                name=f"{slug} voice {n}",
                model="gemini-2.0-flash-live-001",
                config={"response_modalities": ["AUDIO"]},
            )
            for n in range(2)
        ]
        user = User.objects.create(username=f"auditor@{slug}.test", email=f"auditor@{slug}.test")
        Membership.objects.create(organization=org, user=user, role=Role.AUDITOR)
        for outcome, n in (
            ("issued", size),
            ("denied_quota", size // 30),
            ("upstream_error", size // 50),
        ):
            with connection.cursor() as cursor:
                sql = SEED_SQL.replace("%(apps)s", ",".join(str(a.pk) for a in apps)).replace(
                    "%(profiles)s", ",".join(str(p.pk) for p in profiles)
                )
                cursor.execute(sql, {"org": org.pk, "outcome": outcome, "n": n})
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


def timed_gets(client, url: str, params: dict, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        response = client.get(url, params)
        times.append(time.perf_counter() - start)
        assert response.status_code == 200, (url, response.status_code)
    return statistics.median(times) * 1000


@contextmanager
def stock_changelist():
    """Django's own behaviour for the same admin: exact counts and DISTINCT date queries."""
    from django.core.paginator import Paginator
    from django.db.models import QuerySet

    from apps.audit import admin as audit_admin

    grant_admin = audit_admin.TokenGrantAdmin
    saved = (
        grant_admin.paginator,
        grant_admin.show_full_result_count,
        audit_admin.ProbedDatesQuerySet,
    )
    grant_admin.paginator, grant_admin.show_full_result_count = Paginator, True
    audit_admin.ProbedDatesQuerySet = QuerySet
    try:
        yield
    finally:
        (
            grant_admin.paginator,
            grant_admin.show_full_result_count,
            audit_admin.ProbedDatesQuerySet,
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
    parser.add_argument("--repeat", type=int, default=7)
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
    from apps.issuance import lifecycle
    from apps.tenants.models import Organization, User

    results: list[tuple[str, str, str]] = []

    def report(name: str, value: str, note: str = "") -> None:
        results.append((name, value, note))
        print(f"{name:<44} {value:>14}  {note}", flush=True)

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

    client = Client()
    client.force_login(User.objects.get(username="auditor@big.test"))
    changelist = reverse("admin:audit_tokengrant_changelist")
    app = ClientApp.objects.filter(organization=big).order_by("pk").first()
    filtered = {"app": app.pk, "outcome": "issued"}
    ours = timed_gets(client, changelist, {}, args.repeat)
    ours_filtered = timed_gets(client, changelist, filtered, args.repeat)
    with stock_changelist():
        stock = timed_gets(client, changelist, {}, max(3, args.repeat // 2))
        stock_filtered = timed_gets(client, changelist, filtered, max(3, args.repeat // 2))
    report("changelist p50", f"{ours:.0f} ms", f"stock Django {stock:.0f} ms (×{stock / ours:.1f})")
    report(
        "changelist filtered (app + outcome) p50",
        f"{ours_filtered:.0f} ms",
        f"stock Django {stock_filtered:.0f} ms (×{stock_filtered / ours_filtered:.1f})",
    )
    by_user = timed_gets(client, changelist, {"q": "user-42"}, args.repeat)
    report("changelist search by end user p50", f"{by_user:.0f} ms")

    with statement_timer() as durations:
        start = time.perf_counter()
        tally = services.RunTally()
        services.usage_rollup(tally=tally, now=timezone.now() + timedelta(minutes=2))
        elapsed = time.perf_counter() - start
    report(
        "rollup_usage (first run)",
        f"{elapsed:.1f} s",
        f"slowest statement {max(durations) * 1000:.0f} ms",
    )
    dashboard = timed_gets(client, reverse("admin:audit_tokengrant_dashboard"), {}, args.repeat)
    report("dashboard p50", f"{dashboard:.0f} ms")

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


if __name__ == "__main__":
    main()
