"""Writes to the audit trail. Called by other apps' services inside their transactions."""

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Min, Model, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from apps.audit import sealing
from apps.audit.models import (
    AuditSeal,
    CleanupRun,
    PolicyChange,
    TokenGrant,
    UsageDaily,
    UsageRollupCursor,
)
from apps.audit.snapshots import snapshot
from apps.tenants.models import Organization, User

Outcome = TokenGrant.Outcome


def policy_change_record(
    *,
    organization: Organization,
    actor: User | None,
    action: PolicyChange.Action,
    instance: Model,
    before: dict[str, Any] | None,
    object_id: Any = None,
) -> PolicyChange:
    """Record one change; ``before`` is the snapshot taken before the write (None on create).

    ``object_id`` is needed for deletes, where the instance has already lost its pk.
    """
    after = None if action == PolicyChange.Action.DELETE else snapshot(instance)
    return PolicyChange.objects.create(
        organization=organization,
        actor=actor if actor is not None and actor.pk else None,
        actor_label=(actor.email or actor.username) if actor is not None else "system",
        action=action,
        object_type=instance._meta.label_lower,
        object_id=str(object_id if object_id is not None else instance.pk),
        object_repr=str(instance)[:200],
        before=before,
        after=after,
    )


@contextmanager
def audited(
    *,
    organization: Organization,
    actor: User | None,
    instance: Model,
    action: PolicyChange.Action,
) -> Iterator[None]:
    """Run a write and record it, atomically: no change without its record, and vice versa.

    The "before" snapshot is taken on entry and the "after" on exit, so the block may save
    the instance and set its many-to-many fields.
    """
    with transaction.atomic():
        before = None if action == PolicyChange.Action.CREATE else snapshot(instance)
        object_id = instance.pk
        yield
        policy_change_record(
            organization=organization,
            actor=actor,
            action=action,
            instance=instance,
            before=before,
            object_id=object_id if action == PolicyChange.Action.DELETE else None,
        )
        # Whatever issuance cached for this organisation is now stale.
        Organization.objects.filter(pk=organization.pk).update(
            policy_version=F("policy_version") + 1
        )


# --- background upkeep (docs/architecture.md, "The audit trail") ------------------------------


class RunTally:
    """What one task run did, per organisation: ``tally.add(org_id, "expired", 3)``."""

    def __init__(self) -> None:
        self.by_organization: dict[int, Counter] = defaultdict(Counter)
        self.platform: Counter = Counter()  # work that belongs to no one organisation

    def add(self, organization_id: int, name: str, count: int = 1) -> None:
        if count:
            self.by_organization[organization_id][name] += count

    def add_rows(self, rows: Iterable[tuple[int, ...]], name: str) -> None:
        """Count ``(id, organization_id)`` rows, as the batch selects return them."""
        for organization_id, count in Counter(row[1] for row in rows).items():
            self.add(organization_id, name, count)

    def totals(self) -> dict[str, int]:
        total: Counter = Counter(self.platform)
        for counts in self.by_organization.values():
            total.update(counts)
        return dict(total)


def cleanup_run_record(task: str, work: Callable[[RunTally], None]) -> CleanupRun:
    """Run one task's work and record it: the platform's totals plus each organisation's part.

    A failure is recorded with what was done before it, then re-raised so Celery sees it.
    """
    run = CleanupRun.objects.create(task=task, started_at=timezone.now())
    tally = RunTally()
    try:
        work(tally)
    except Exception as error:
        run.error = f"{type(error).__name__}: {error}"[:500]
        raise
    finally:
        run.finished_at = timezone.now()
        run.counts = tally.totals()
        run.save(update_fields=["finished_at", "counts", "error"])
        CleanupRun.objects.bulk_create(
            CleanupRun(
                task=task,
                organization_id=organization_id,
                started_at=run.started_at,
                finished_at=run.finished_at,
                counts=dict(counts),
            )
            for organization_id, counts in sorted(tally.by_organization.items())
        )
    return run


def _settled_through(records: QuerySet, *, after: int, time_field: str, now: datetime) -> int:
    """The highest id up to which an organisation's records are final and committed.

    A record still PENDING, or younger than ``AUDIT_SETTLE_SECONDS``, stops the range: the
    first may still change, and a younger id may sit below one whose transaction has not
    committed yet (ids are handed out before commit). Sealing past it would later make that
    record look inserted.
    """
    settle_from = now - timedelta(seconds=settings.AUDIT_SETTLE_SECONDS)
    newer = records.filter(id__gt=after)
    blockers = [newer.filter(**{f"{time_field}__gte": settle_from})]
    if records.model is TokenGrant:
        blockers.append(newer.filter(outcome=Outcome.PENDING))
    # MIN(id) rather than ORDER BY id LIMIT 1: the planner then reads the few recent (or
    # pending) rows from their own index instead of walking the primary key from ``after``.
    firsts = [b.aggregate(first=Min("id"))["first"] for b in blockers]
    stop = min((first for first in firsts if first is not None), default=None)
    settled = newer if stop is None else newer.filter(id__lt=stop)
    return settled.order_by("-id").values_list("id", flat=True).first() or after


def _next_range(records: QuerySet, *, after: int, through: int, limit: int) -> int:
    """Where a seal of at most ``limit`` records starting after ``after`` ends."""
    ids = records.filter(id__gt=after, id__lte=through).order_by("id").values_list("id", flat=True)
    last = ids[limit - 1 : limit].first() if limit else None
    return last if last is not None else through


def audit_seal_organization(*, organization: Organization, now: datetime | None = None) -> int:
    """Append seals for the organisation's settled, unsealed records; returns how many.

    Seals are appended under a lock on the organisation's row, so two runs never fork the
    chain; the unique sequence is the last line of defence.
    """
    now = now or timezone.now()
    limit = settings.AUDIT_SEAL_BATCH_SIZE
    grants = TokenGrant.objects.filter(organization=organization)
    changes = PolicyChange.objects.filter(organization=organization)
    made = 0
    while True:
        with transaction.atomic():
            Organization.objects.select_for_update().filter(pk=organization.pk).first()
            last = AuditSeal.objects.filter(organization=organization).order_by("-sequence").first()
            grants_after = last.grants_through_id if last else 0
            changes_after = last.changes_through_id if last else 0
            grants_through = _next_range(
                grants,
                after=grants_after,
                through=_settled_through(
                    grants, after=grants_after, time_field="requested_at", now=now
                ),
                limit=limit,
            )
            changes_through = _next_range(
                changes,
                after=changes_after,
                through=_settled_through(
                    changes, after=changes_after, time_field="occurred_at", now=now
                ),
                limit=limit,
            )
            if grants_through == grants_after and changes_through == changes_after:
                return made
            new_grants = list(
                sealing.grant_entries(grants.filter(id__gt=grants_after, id__lte=grants_through))
            )
            new_changes = list(
                sealing.change_entries(
                    changes.filter(id__gt=changes_after, id__lte=changes_through)
                )
            )
            prev_hash = last.hash if last else sealing.GENESIS
            grants_root = sealing.entries_root(new_grants)
            changes_root = sealing.entries_root(new_changes)
            AuditSeal.objects.create(
                organization=organization,
                sequence=(last.sequence + 1) if last else 1,
                sealed_at=now,
                prev_hash=prev_hash,
                hash=sealing.seal_hash(prev_hash, grants_root, changes_root),
                grants_root=grants_root,
                changes_root=changes_root,
                grant_count=len(new_grants),
                change_count=len(new_changes),
                grants_after_id=grants_after,
                grants_through_id=grants_through,
                changes_after_id=changes_after,
                changes_through_id=changes_through,
                grant_entries=new_grants,
                change_entries=new_changes,
            )
            made += 1


def audit_seal(*, tally: RunTally, now: datetime | None = None) -> None:
    for organization in Organization.objects.order_by("pk"):
        tally.add(
            organization.pk, "seals", audit_seal_organization(organization=organization, now=now)
        )


def usage_rollup(*, tally: RunTally, now: datetime | None = None) -> None:
    """Count settled grants into ``UsageDaily``, each exactly once (a cursor per org)."""
    now = now or timezone.now()
    for organization in Organization.objects.order_by("pk"):
        grants = TokenGrant.objects.filter(organization=organization)
        while True:
            with transaction.atomic():
                cursor, _ = UsageRollupCursor.objects.select_for_update().get_or_create(
                    organization=organization
                )
                after = cursor.last_grant_id
                through = _next_range(
                    grants,
                    after=after,
                    through=_settled_through(
                        grants, after=after, time_field="requested_at", now=now
                    ),
                    limit=settings.AUDIT_SEAL_BATCH_SIZE,
                )
                if through == after:
                    break
                groups = (
                    grants.filter(id__gt=after, id__lte=through)
                    .annotate(day=TruncDate("requested_at", tzinfo=UTC))
                    .order_by()
                    .values("day", "client_app_id", "profile_id", "outcome")
                    .annotate(n=Count("id"))
                )
                counted = 0
                for group in groups:
                    key = {
                        "organization": organization,
                        "day": group["day"],
                        "client_app_id": group["client_app_id"],
                        "profile_id": group["profile_id"],
                        "outcome": group["outcome"],
                    }
                    if not UsageDaily.objects.filter(**key).update(count=F("count") + group["n"]):
                        UsageDaily.objects.create(**key, count=group["n"])
                    counted += group["n"]
                cursor.last_grant_id = through
                cursor.save(update_fields=["last_grant_id"])
            tally.add(organization.pk, "grants_counted", counted)


def grants_purge(*, tally: RunTally, now: datetime | None = None) -> None:
    """Delete grants past their organisation's ``retention_days``, a whole seal at a time.

    Only sealed grants go, oldest seal first, and only seals made before the cutoff (a seal
    is younger than every record it covers). The seal keeps its ``grants_root`` and drops
    the per-grant entries, so the chain still verifies and simply no longer expects those
    rows. A seal whose rows no longer match it is left alone: purging would erase the proof.
    """
    now = now or timezone.now()
    for organization in Organization.objects.order_by("pk"):
        cutoff = now - timedelta(days=organization.retention_days)
        grants = TokenGrant.objects.filter(organization=organization)
        seals = AuditSeal.objects.filter(
            organization=organization, grants_purged_at__isnull=True, sealed_at__lt=cutoff
        ).order_by("sequence")
        for seal in seals.iterator(chunk_size=20):
            in_seal = grants.filter(id__gt=seal.grants_after_id, id__lte=seal.grants_through_id)
            if list(sealing.grant_entries(in_seal)) != seal.grant_entries:
                tally.add(organization.pk, "seals_not_matching")
                break
            with transaction.atomic():
                deleted, _ = in_seal.delete()
                AuditSeal.objects.filter(pk=seal.pk).update(
                    grant_entries=None, grants_purged_at=now
                )
            tally.add(organization.pk, "purged", deleted)
    # The task runs' own record (several rows a minute) is kept for a fixed time.
    old_runs = CleanupRun.objects.filter(
        started_at__lt=now - timedelta(days=settings.AUDIT_TASK_RUN_RETENTION_DAYS)
    )
    while ids := list(old_runs.values_list("pk", flat=True)[: settings.AUDIT_BATCH_SIZE]):
        tally.platform["task_runs_purged"] += CleanupRun.objects.filter(pk__in=ids).delete()[0]
