import itertools
from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError
from django.utils import timezone

from apps.audit import services
from apps.audit.models import AuditSeal, CleanupRun, PolicyChange, TokenGrant, UsageDaily
from apps.audit.selectors import audit_chain_verify
from apps.audit.services import RunTally, audited
from apps.audit.snapshots import REDACTED, snapshot
from apps.issuance.lifecycle import grants_expire
from apps.tenants import services as tenant_services
from apps.tenants.models import Role
from tests.factories import TokenGrantFactory

pytestmark = pytest.mark.django_db

Outcome = TokenGrant.Outcome


def test_a_failed_write_leaves_no_record(two_orgs):
    alpha, _ = two_orgs
    membership = alpha.owner.memberships.get()
    before = PolicyChange.objects.count()

    with (
        pytest.raises(IntegrityError),
        audited(
            organization=alpha.organization,
            actor=alpha.owner,
            instance=membership,
            action=PolicyChange.Action.UPDATE,
        ),
    ):
        membership.user_id = None
        membership.save()

    assert PolicyChange.objects.count() == before


def test_snapshots_redact_secrets_but_say_whether_they_are_set(two_orgs):
    alpha, _ = two_orgs

    data = snapshot(alpha.credential)

    assert data["ciphertext"] == REDACTED
    assert data["last_four"] == "0000"
    assert snapshot(alpha.client_key)["secret_hash"] == REDACTED


def test_a_deletion_is_recorded_with_the_row_it_removed(two_orgs):
    alpha, _ = two_orgs
    membership = alpha.users[Role.MEMBER].memberships.get()
    membership_id = membership.pk

    tenant_services.membership_delete(
        organization=alpha.organization, membership=membership, actor=alpha.owner
    )

    change = PolicyChange.objects.get(object_type="tenants.membership", action="delete")
    assert change.object_id == str(membership_id)
    assert change.before["role"] == Role.MEMBER
    assert change.after is None
    assert change.actor_label == alpha.owner.email


def test_system_writes_are_attributed_to_the_system(two_orgs):
    alpha, _ = two_orgs

    tenant_services.invitation_create(
        organization=alpha.organization, email="x@y.test", role=Role.MEMBER, invited_by=None
    )

    change = PolicyChange.objects.filter(object_type="tenants.invitation").last()
    assert (change.actor, change.actor_label) == (None, "system")


def test_changes_are_read_only_in_the_admin_even_for_the_operator(client, two_orgs, operator):
    alpha, _ = two_orgs
    change = PolicyChange.objects.filter(organization=alpha.organization).first()
    client.force_login(operator)
    url = f"/admin/audit/policychange/{change.pk}/"

    page = client.get(url + "change/")
    refused = client.post(url + "delete/", {"post": "yes"})

    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert refused.status_code == 403
    assert PolicyChange.objects.filter(pk=change.pk).exists()


# --- task runs, sealing, rollups and purges (controlled time) -------------------------------

T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


def run(work, now):
    tally = RunTally()
    work(tally=tally, now=now)
    return tally


def seal_all(organization, now):
    return services.audit_seal_organization(organization=organization, now=now)


def test_seals_chain_settled_records_and_wait_for_pending_ones(two_orgs, settings):
    settings.AUDIT_SEAL_BATCH_SIZE = 4
    alpha, bravo = two_orgs
    later = timezone.now() + timedelta(minutes=2)
    done = [TokenGrantFactory(organization=alpha.organization) for _ in range(5)]
    pending = TokenGrantFactory(organization=alpha.organization, outcome=Outcome.PENDING)
    after_pending = TokenGrantFactory(organization=alpha.organization)
    TokenGrantFactory(organization=bravo.organization)

    made = seal_all(alpha.organization, later)

    seals = list(AuditSeal.objects.filter(organization=alpha.organization).order_by("sequence"))
    assert seals[0] == alpha.seal and seals[0].prev_hash == "0" * 64
    seals = seals[1:]
    assert made == len(seals) >= 2
    assert seals[0].prev_hash == alpha.seal.hash
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(seals))
    sealed_ids = [entry[0] for seal in seals for entry in seal.grant_entries]
    assert sealed_ids == [grant.pk for grant in done]  # stops before the pending grant
    assert seals[-1].grants_through_id < pending.pk

    assert seal_all(alpha.organization, later) == 0  # nothing new: no new seal
    pending.outcome = Outcome.ISSUED
    pending.save()
    seal_all(alpha.organization, later)
    last = AuditSeal.objects.filter(organization=alpha.organization).latest("sequence")
    assert [entry[0] for entry in last.grant_entries] == [pending.pk, after_pending.pk]


def test_records_younger_than_the_settle_time_wait(two_orgs):
    alpha, _ = two_orgs
    TokenGrantFactory(organization=alpha.organization)

    assert seal_all(alpha.organization, timezone.now()) == 0
    assert seal_all(alpha.organization, timezone.now() + timedelta(minutes=2)) == 1


def test_rollup_counts_each_settled_grant_once(two_orgs, settings):
    settings.AUDIT_SEAL_BATCH_SIZE = 3
    alpha, bravo = two_orgs
    day = (timezone.now() - timedelta(days=3)).replace(hour=23, minute=59)
    for outcome in [Outcome.ISSUED] * 4 + [Outcome.DENIED_QUOTA] * 2:
        TokenGrantFactory(
            organization=alpha.organization,
            client_app=alpha.client_app,
            profile=alpha.profile,
            outcome=outcome,
            requested_at=day,
        )
    TokenGrantFactory(organization=alpha.organization, requested_at=day + timedelta(minutes=2))
    TokenGrantFactory(organization=bravo.organization, requested_at=day)
    pending = TokenGrantFactory(organization=alpha.organization, outcome=Outcome.PENDING)
    now = timezone.now() + timedelta(minutes=2)

    first = run(services.usage_rollup, now)
    second = run(services.usage_rollup, now)

    rows = {
        (row.day, row.outcome, row.client_app_id): row.count
        for row in UsageDaily.objects.filter(organization=alpha.organization)
    }
    today = alpha.grant.requested_at.astimezone(UTC).date()
    assert rows == {
        (today, "issued", alpha.client_app.pk): 1,  # the world's own grant
        (day.date(), "issued", alpha.client_app.pk): 4,
        (day.date(), "denied_quota", alpha.client_app.pk): 2,
        (day.date() + timedelta(days=1), "issued", None): 1,
    }
    assert first.by_organization[alpha.organization.pk] == {"grants_counted": 8}
    assert second.totals() == {}

    pending.outcome = Outcome.ISSUED
    pending.save()
    assert run(services.usage_rollup, now).totals() == {"grants_counted": 1}


def test_purge_removes_only_sealed_grants_past_retention(two_orgs):
    alpha, bravo = two_orgs
    alpha.organization.retention_days = 30
    alpha.organization.save()
    old = [
        TokenGrantFactory(organization=alpha.organization, requested_at=T0 - timedelta(days=90))
        for _ in range(3)
    ]
    services.audit_seal_organization(organization=alpha.organization, now=T0 - timedelta(days=89))
    unsealed_old = TokenGrantFactory(
        organization=alpha.organization, requested_at=T0 - timedelta(days=80), outcome="pending"
    )
    recent = TokenGrantFactory(organization=alpha.organization, requested_at=T0)
    bravo_old = TokenGrantFactory(
        organization=bravo.organization, requested_at=T0 - timedelta(days=90)
    )

    first = run(services.grants_purge, T0)
    second = run(services.grants_purge, T0)

    kept = set(TokenGrant.objects.values_list("pk", flat=True))
    assert not kept & {grant.pk for grant in old}
    assert {unsealed_old.pk, recent.pk, bravo_old.pk} <= kept
    assert first.totals() == {"purged": 3}
    assert second.totals() == {}
    assert audit_chain_verify(organization=alpha.organization).ok


def test_a_run_is_recorded_with_each_organisations_counts(two_orgs):
    alpha, bravo = two_orgs
    TokenGrantFactory(organization=alpha.organization, requested_at=T0)

    run_row = services.cleanup_run_record(
        "expire_grants", lambda tally: grants_expire(tally=tally, now=T0 + timedelta(1))
    )

    assert (run_row.organization, run_row.counts, run_row.error) == (None, {"expired": 1}, "")
    assert run_row.finished_at >= run_row.started_at
    mine = CleanupRun.objects.get(task="expire_grants", organization=alpha.organization)
    assert mine.counts == {"expired": 1}
    assert not CleanupRun.objects.filter(
        organization=bravo.organization, task="expire_grants"
    ).exists()


def test_a_failed_run_is_recorded_with_its_error_and_raised(two_orgs):
    alpha, _ = two_orgs

    def broken(tally):
        tally.add(alpha.organization.pk, "done", 2)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        services.cleanup_run_record("seal_audit", broken)

    recorded = CleanupRun.objects.get(task="seal_audit", organization=None)
    assert recorded.error == "RuntimeError: disk full"
    assert recorded.counts == {"done": 2}


def test_purge_also_drops_task_runs_past_their_retention(two_orgs, settings):
    alpha, _ = two_orgs
    settings.AUDIT_TASK_RUN_RETENTION_DAYS = 30
    old = CleanupRun.objects.create(task="seal_audit", started_at=T0 - timedelta(days=31))
    kept = CleanupRun.objects.create(
        task="seal_audit", organization=alpha.organization, started_at=T0 - timedelta(days=29)
    )

    tally = run(services.grants_purge, T0)

    assert not CleanupRun.objects.filter(pk=old.pk).exists()
    assert CleanupRun.objects.filter(pk=kept.pk).exists()
    assert tally.totals() == {"task_runs_purged": 1}
