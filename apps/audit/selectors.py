"""Reads of the audit trail; every one takes the organisation explicitly."""

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.db.models import Count, QuerySet, Sum

from apps.audit import sealing
from apps.audit.models import (
    AuditSeal,
    CleanupRun,
    PolicyChange,
    TokenGrant,
    UsageDaily,
    UsageRollupCursor,
)
from apps.clients.models import ClientApp
from apps.policies.models import LiveConstraintProfile
from apps.tenants.models import Organization
from portal.crypto import token_fingerprint


def policy_change_list(
    *, organization: Organization, object_type: str | None = None, object_id: str | None = None
) -> QuerySet[PolicyChange]:
    changes = PolicyChange.objects.filter(organization=organization)
    if object_type:
        changes = changes.filter(object_type=object_type)
    if object_id is not None:
        changes = changes.filter(object_id=str(object_id))
    return changes


@dataclass(frozen=True)
class ChainReport:
    """What ``verify_audit`` says about one organisation's chain."""

    organization: Organization
    seals: int
    grants: int
    changes: int
    head: str
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _first_difference(kind: str, stored: list, actual: list, describe) -> str | None:
    """Name the first record that differs between a seal's entries and the rows now held."""
    stored_by_id = {record_id: digest for record_id, digest in stored}
    actual_by_id = {record_id: digest for record_id, digest in actual}
    for record_id in sorted(stored_by_id.keys() | actual_by_id.keys()):
        if record_id not in actual_by_id:
            return f"{kind} id {record_id} was deleted"
        if record_id not in stored_by_id:
            return f"{kind} {describe(record_id)} was inserted after sealing"
        if stored_by_id[record_id] != actual_by_id[record_id]:
            return f"{kind} {describe(record_id)} was changed after sealing"
    return None


def audit_chain_verify(*, organization: Organization) -> ChainReport:
    """Recompute an organisation's chain from its rows and name the first thing that differs.

    Checks, seal by seal: the sequence has no gap, each seal links to the one before, the
    ranges meet, the held rows give the stored entries, the entries give the roots and the
    roots give the hash. Seals whose grants were purged are checked from their roots.
    """
    grants = TokenGrant.objects.filter(organization=organization)
    changes = PolicyChange.objects.filter(organization=organization)
    prev_hash, expected_sequence = sealing.GENESIS, 1
    grants_through = changes_through = 0
    counted_grants = counted_changes = 0

    def report(problem: str | None = None) -> ChainReport:
        return ChainReport(
            organization, expected_sequence - 1, counted_grants, counted_changes, prev_hash, problem
        )

    def grant_name(record_id: int) -> str:
        public_id = grants.filter(pk=record_id).values_list("public_id", flat=True).first()
        return f"{public_id} (id {record_id})"

    seals = AuditSeal.objects.filter(organization=organization).order_by("sequence")
    for seal in seals.iterator(chunk_size=20):
        where = f"seal #{seal.sequence}"
        if seal.sequence != expected_sequence:
            return report(f"{where}: expected seal #{expected_sequence} (a seal is missing)")
        if seal.prev_hash != prev_hash:
            return report(f"{where}: does not link to the seal before it")
        if (seal.grants_after_id, seal.changes_after_id) != (grants_through, changes_through):
            return report(f"{where}: its range does not start where the previous seal ended")
        in_seal = grants.filter(id__gt=seal.grants_after_id, id__lte=seal.grants_through_id)
        held = list(sealing.grant_entries(in_seal))
        if seal.grant_entries is None:  # purged: nothing may have come back
            if held:
                return report(f"{where}: grant {grant_name(held[0][0])} was inserted after purge")
            grants_root = seal.grants_root
        else:
            problem = _first_difference("grant", seal.grant_entries, held, grant_name)
            if problem:
                return report(f"{where}: {problem}")
            grants_root = sealing.entries_root(held)
            counted_grants += len(held)
        held_changes = list(
            sealing.change_entries(
                changes.filter(id__gt=seal.changes_after_id, id__lte=seal.changes_through_id)
            )
        )
        problem = _first_difference(
            "policy change", seal.change_entries, held_changes, lambda record_id: f"id {record_id}"
        )
        if problem:
            return report(f"{where}: {problem}")
        counted_changes += len(held_changes)
        changes_root = sealing.entries_root(held_changes)
        if (grants_root, changes_root) != (seal.grants_root, seal.changes_root):
            return report(f"{where}: its stored entries do not give its roots")
        if sealing.seal_hash(prev_hash, grants_root, changes_root) != seal.hash:
            return report(f"{where}: its hash does not match its contents")
        prev_hash, expected_sequence = seal.hash, expected_sequence + 1
        grants_through, changes_through = seal.grants_through_id, seal.changes_through_id
    return report()


def grant_by_token(*, organization: Organization, token_or_fingerprint: str) -> TokenGrant | None:
    """The grant a pasted token (or its fingerprint) came from, in this organisation only."""
    pasted = token_or_fingerprint.strip()
    if not pasted:
        return None
    candidates = {token_fingerprint(pasted)}
    if len(pasted) == 64 and all(c in "0123456789abcdef" for c in pasted.lower()):
        candidates.add(pasted.lower())
    return (
        TokenGrant.objects.filter(organization=organization, token_fingerprint__in=candidates)
        .exclude(token_fingerprint="")
        .first()
    )


# --- the auditor's dashboard: read from UsageDaily, never from the raw grants ------------------


@dataclass(frozen=True)
class DayUsage:
    day: date
    issued: int
    denied: int
    errors: int

    @property
    def total(self) -> int:
        return self.issued + self.denied + self.errors


DENIED = (TokenGrant.Outcome.DENIED_QUOTA, TokenGrant.Outcome.DENIED_POLICY)
FAILED = (TokenGrant.Outcome.UPSTREAM_ERROR, TokenGrant.Outcome.ABANDONED)


def usage_by_day(*, organization: Organization, days: int, today: date) -> list[DayUsage]:
    """One entry per UTC day of the last ``days`` (today included), zeros where nothing ran."""
    first = today - timedelta(days=days - 1)
    counts: dict[tuple[date, str], int] = {
        (row["day"], row["outcome"]): row["n"]
        for row in UsageDaily.objects.filter(organization=organization, day__gte=first)
        .values("day", "outcome")
        .annotate(n=Sum("count"))
    }

    def total(day: date, outcomes) -> int:
        return sum(counts.get((day, outcome), 0) for outcome in outcomes)

    return [
        DayUsage(
            day,
            total(day, [TokenGrant.Outcome.ISSUED]),
            total(day, DENIED),
            total(day, FAILED),
        )
        for day in (first + timedelta(days=n) for n in range(days))
    ]


def usage_top(
    *, organization: Organization, by: str, since: date, limit: int = 5
) -> list[tuple[str, int]]:
    """The apps or profiles (``by``) with the most issued tokens since ``since``."""
    related = {"client_app": ClientApp, "profile": LiveConstraintProfile}[by]
    rows = (
        UsageDaily.objects.filter(
            organization=organization, day__gte=since, outcome=TokenGrant.Outcome.ISSUED
        )
        .exclude(**{f"{by}__isnull": True})
        .values(by)
        .annotate(n=Sum("count"))
        .order_by("-n")[:limit]
    )
    names = dict(
        related.objects.filter(
            organization=organization, pk__in=[row[by] for row in rows]
        ).values_list("pk", "name")
    )
    return [(names.get(row[by], "(deleted)"), row["n"]) for row in rows]


def _tokens_live(now: datetime) -> QuerySet[TokenGrant]:
    """Issued tokens not yet expired: an index range over the live-token partial index."""
    return TokenGrant.objects.filter(
        lifecycle__in=TokenGrant.LIVE_LIFECYCLES, expire_time__gt=now
    ).order_by()


def tokens_active_count(*, organization: Organization, now: datetime) -> int:
    return _tokens_live(now).filter(organization=organization).count()


def tokens_active_by_organization(*, now: datetime) -> dict[str, int]:
    """The operator's view (``/metrics``): live tokens per organisation slug."""
    rows = _tokens_live(now).values("organization__slug").annotate(n=Count("id"))
    return {row["organization__slug"]: row["n"] for row in rows}


def usage_counted_through(*, organization: Organization) -> datetime | None:
    """When the newest grant the rollup has counted was asked for: how fresh the charts are."""
    cursor = UsageRollupCursor.objects.filter(organization=organization).first()
    if cursor is None or not cursor.last_grant_id:
        return None
    return (
        TokenGrant.objects.filter(organization=organization, pk=cursor.last_grant_id)
        .values_list("requested_at", flat=True)
        .first()
    )


def cleanup_runs_latest(*, organization: Organization) -> list[CleanupRun]:
    """Each task's newest run that touched this organisation."""
    runs = []
    for task in CleanupRun.TASKS:
        run = CleanupRun.objects.filter(organization=organization, task=task).first()
        if run is not None:
            runs.append(run)
    return runs


def seal_latest(*, organization: Organization) -> AuditSeal | None:
    return AuditSeal.objects.filter(organization=organization).order_by("-sequence").first()
