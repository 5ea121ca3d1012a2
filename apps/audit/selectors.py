"""Reads of the audit trail; every one takes the organisation explicitly."""

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.db.models import Count, OuterRef, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce

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


# --- the operator's view (/metrics): across organisations, each read a few index entries -----

_BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class TaskRunState:
    """A background task's newest finished run, and its newest successful one."""

    last_run_at: datetime
    last_run_failed: bool
    last_success_at: datetime | None


def task_run_states() -> dict[str, TaskRunState]:
    """Each task's newest finished run (platform rows: one per run), for staleness alerts.

    Each lookup walks the ``(task, -started_at)`` index from the newest run, so it reads a
    few rows however long the history; the newest success is looked for only behind a failure.
    """
    states = {}
    for task in CleanupRun.TASKS:
        finished = CleanupRun.objects.filter(
            task=task, organization=None, finished_at__isnull=False
        ).order_by("-started_at")
        newest = finished.values("finished_at", "error").first()
        if newest is None:
            continue
        if newest["error"]:
            last_success = finished.filter(error="").values_list("finished_at", flat=True).first()
        else:
            last_success = newest["finished_at"]
        states[task] = TaskRunState(newest["finished_at"], bool(newest["error"]), last_success)
    return states


def audit_oldest_unsealed_by_organization() -> dict[str, datetime]:
    """When each organisation's oldest record not yet in its seal chain was made.

    Organisations with everything sealed are left out. Sealing covers records in id order,
    so the unsealed grants are those after the newest seal's ``grants_through_id``. The
    oldest of them is read from the ``(organization, -requested_at)`` index starting at the
    last sealed grant's time, which skips the sealed history however long it is. A grant
    asked for before that one but written after it (moments apart) is only looked for while
    PENDING, in the partial pending index: that is the one that holds a chain back. Policy
    changes likewise, from ``(organization, -occurred_at)``.
    """
    last_seal = AuditSeal.objects.filter(organization=OuterRef("pk")).order_by("-sequence")
    organizations = (
        Organization.objects.order_by()
        .annotate(
            grants_through=Coalesce(Subquery(last_seal.values("grants_through_id")[:1]), 0),
            changes_through=Coalesce(Subquery(last_seal.values("changes_through_id")[:1]), 0),
        )
        .annotate(
            # The last sealed record's own time; the beginning of time before the first seal, or
            # once that grant is purged (then every grant still held is unsealed).
            grants_sealed_until=_time_of(TokenGrant, "requested_at", "grants_through"),
            changes_sealed_until=_time_of(PolicyChange, "occurred_at", "changes_through"),
        )
    )
    rows = organizations.annotate(
        first_grant=_first_unsealed(
            TokenGrant, "requested_at", "grants_sealed_until", "grants_through"
        ),
        first_pending=Subquery(
            TokenGrant.objects.filter(
                organization=OuterRef("pk"),
                outcome=TokenGrant.Outcome.PENDING,
                id__gt=OuterRef("grants_through"),
            )
            .order_by("id")
            .values("requested_at")[:1]
        ),
        first_change=_first_unsealed(
            PolicyChange, "occurred_at", "changes_sealed_until", "changes_through"
        ),
    ).values_list("slug", "first_grant", "first_pending", "first_change")
    oldest = {}
    for slug, *unsealed in rows:
        made = [moment for moment in unsealed if moment is not None]
        if made:
            oldest[slug] = min(made)
    return oldest


def _time_of(model, time_field: str, through: str) -> Coalesce:
    """The time of the record whose id the outer row's ``through`` names, or the beginning."""
    record = model.objects.filter(pk=OuterRef(through)).order_by().values(time_field)[:1]
    return Coalesce(Subquery(record), Value(_BEGINNING))


def _first_unsealed(model, time_field: str, sealed_until: str, through: str) -> Subquery:
    """The oldest time among the outer organisation's records after ``through``, read from
    the ``(organization, -time)`` index from ``sealed_until`` on."""
    return Subquery(
        model.objects.filter(
            organization=OuterRef("pk"),
            **{f"{time_field}__gte": OuterRef(sealed_until)},
            id__gt=OuterRef(through),
        )
        .order_by(time_field)
        .values(time_field)[:1]
    )
