"""The operator's backup drill (``manage.py backup_drill``), run as its own process.

It dumps the test database with pg_dump, restores the dump into a new database and runs
verify_audit there, so the audit trail built here must be committed: transactional tests.
"""

import re
import secrets
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from apps.audit import services as audit_services
from apps.audit.models import AuditSeal, TokenGrant
from apps.policies import services as policy_services
from tests.conftest import TenantWorld, make_world
from tests.factories import TokenGrantFactory
from tests.portal.test_settings import production_env, run_manage

pytestmark = [
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="the drill dumps and restores PostgreSQL"
    ),
    pytest.mark.django_db(transaction=True),
]

# The local server trusts its clients and ignores it; the drill must never print it.
PASSWORD = "drill-pw-" + secrets.token_hex(8)
CHAIN_LINE = re.compile(r"^\s+(source|restored): OK (\S+): .*; head ([0-9a-f]{64})$", re.M)


def database_url(name: str) -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}:{PASSWORD}@{db['HOST']}:{db['PORT'] or 5432}/{name}"


def run_drill(*arguments: str, tmp_path):
    """The drill as an operator runs it: production settings, DATABASE_URL naming the source."""
    env = {**production_env(), "DATABASE_URL": database_url(connection.settings_dict["NAME"])}
    del env["REDIS_URL"]  # the drill touches only PostgreSQL
    return run_manage("backup_drill", *arguments, env=env, tmp_path=tmp_path)


def database_exists(name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        return cursor.fetchone() is not None


@pytest.fixture
def target():
    """A restore target named after this run's database (test_<db> → <db>_drill_…), dropped."""
    name = f"{connection.settings_dict['NAME'].removeprefix('test_')}_drill_{uuid.uuid4().hex[:8]}"
    yield name
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')


def sealed_trail() -> tuple[TenantWorld, TenantWorld]:
    """Two organisations whose grants and policy changes are sealed in more than one seal."""
    alpha = make_world("Alpha", with_audit_trail=True)
    bravo = make_world("Bravo", with_audit_trail=True)
    for n in range(3):
        TokenGrantFactory(
            organization=alpha.organization,
            client_app=alpha.client_app,
            client_key_prefix=alpha.client_key.prefix,
            profile=alpha.profile,
            profile_slug=alpha.profile.slug,
            end_user=f"alpha-later-{n}",
        )
    policy_services.quota_update(
        organization=alpha.organization, quota=alpha.quota, actor=alpha.owner, limit=30
    )
    # As the seal_audit task does, a little in the future so the rows just written count as
    # settled.
    later = timezone.now() + timedelta(minutes=2)
    audit_services.cleanup_run_record(
        "seal_audit", lambda tally: audit_services.audit_seal(tally=tally, now=later)
    )
    assert AuditSeal.objects.filter(organization=alpha.organization).count() == 2
    return alpha, bravo


def heads(output: str, side: str) -> dict[str, str]:
    return {slug: head for found, slug, head in CHAIN_LINE.findall(output) if found == side}


def latest_seal_hash(world: TenantWorld) -> str:
    return AuditSeal.objects.filter(organization=world.organization).latest("sequence").hash


def test_drill_restores_a_copy_that_verifies_with_the_source_heads(target, tmp_path):
    alpha, bravo = sealed_trail()

    drill = run_drill("--target", target, "--keep", tmp_path=tmp_path)

    output = drill.stdout + drill.stderr
    assert drill.returncode == 0, output
    assert heads(output, "restored") == heads(output, "source")
    assert heads(output, "source") == {
        "alpha": latest_seal_hash(alpha),
        "bravo": latest_seal_hash(bravo),
    }
    assert "Backup drill passed: 2 organisations" in drill.stdout
    assert database_exists(target)  # --keep
    assert PASSWORD not in output
    assert f"postgresql://{connection.settings_dict['USER']}:***@" in drill.stdout


def test_drill_fails_naming_the_organisation_whose_sealed_grant_was_edited(target, tmp_path):
    alpha, bravo = sealed_trail()
    TokenGrant.objects.filter(pk=alpha.grant.pk).update(end_user="someone-else")

    drill = run_drill("--target", target, tmp_path=tmp_path)

    assert drill.returncode != 0, drill.stdout
    assert "Backup drill FAILED for: alpha\n" in drill.stderr
    assert f"grant {alpha.grant.public_id} (id {alpha.grant.pk}) was changed" in drill.stdout
    assert heads(drill.stdout, "restored") == {"bravo": latest_seal_hash(bravo)}
    assert not database_exists(target)  # dropped without --keep, failure or not


def test_drill_refuses_to_restore_over_an_existing_database(target, tmp_path):
    sealed_trail()
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{target}"')
        cursor.execute(f"COMMENT ON DATABASE \"{target}\" IS 'the operator''s own'")

    drill = run_drill("--target", target, tmp_path=tmp_path)

    assert drill.returncode != 0, drill.stdout
    assert f"Refusing to overwrite database {target}" in drill.stderr
    assert "pg_dump" not in drill.stdout
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            [target],
        )
        assert cursor.fetchone() == ("the operator's own",)
