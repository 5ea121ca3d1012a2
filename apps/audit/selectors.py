"""Reads of the audit trail; every one takes the organisation explicitly."""

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import reduce
from operator import or_

from django.conf import settings
from django.db.models import Count, F, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce, TruncDate, TruncHour

from apps.audit import sealing
from apps.audit.models import (
    AuditSeal,
    CleanupRun,
    PolicyChange,
    TokenGrant,
    UsageDaily,
    UsageRollupCursor,
)
from apps.clients.models import ClientApp, ClientKey
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


TOKEN_NAME_PREFIX = "auth_tokens/"  # noqa: S105 (the name Google gives every token)


def grant_by_token(*, organization: Organization, token_or_fingerprint: str) -> TokenGrant | None:
    """The grant a pasted token (or its fingerprint) came from, in this organisation only.

    Google names a token ``auth_tokens/…`` and the fingerprint is taken of that whole name,
    but client code often keeps only the part after the slash: both forms are tried. Spaces
    and line breaks a paste picks up, and quotes copied out of JSON, are dropped (a token has
    none of them).
    """
    pasted = "".join(token_or_fingerprint.split()).strip("\"'")
    if not pasted:
        return None
    bare = pasted.removeprefix(TOKEN_NAME_PREFIX)
    candidates = {token_fingerprint(pasted), token_fingerprint(TOKEN_NAME_PREFIX + bare)}
    if len(pasted) == 64 and all(c in "0123456789abcdef" for c in pasted.lower()):
        candidates.add(pasted.lower())
    return (
        TokenGrant.objects.filter(organization=organization, token_fingerprint__in=candidates)
        .exclude(token_fingerprint="")
        .first()
    )


_HEX_DIGITS = frozenset("0123456789abcdef")
# A grant id is matched by prefix from this many hex digits: shorter ones read as names.
GRANT_ID_MIN_PREFIX = 4


def grant_search_arms(term: str) -> list[Q]:
    """What the auditor's search box matches, one condition per index that answers it
    (docs/adr/0018-grant-search-indexes.md); empty for a blank term.

    - end user and key prefix: case-insensitive prefix (``alice`` finds
      ``Alice@acme.example``); a key typed whole (``eph_<prefix>_…``) is matched by its
      prefix only, so the secret part is never compared with anything;
    - request id: prefix, as typed (it is copied from logs or headers);
    - grant id: prefix of at least ``GRANT_ID_MIN_PREFIX`` hex digits, hyphens or not, as a
      range of the unique ``public_id`` index.
    The caller applies them to grants already scoped to one organisation.
    """
    term = term.strip()
    if not term:
        return []
    arms = [Q(end_user__istartswith=term), Q(request_id__startswith=term)]
    key_prefix = term
    if key_prefix[:4].lower() == "eph_":
        key_prefix = key_prefix[4:].split("_", 1)[0]
    if key_prefix:
        arms.append(Q(client_key_prefix__istartswith=key_prefix))
    digits = term.replace("-", "").lower()
    if GRANT_ID_MIN_PREFIX <= len(digits) <= 32 and set(digits) <= _HEX_DIGITS:
        lowest = uuid.UUID(digits.ljust(32, "0"))
        highest = uuid.UUID(digits.ljust(32, "f"))
        arms.append(Q(public_id__gte=lowest, public_id__lte=highest))
    return arms


def grant_search_condition(term: str) -> Q | None:
    """The search arms as one condition; ``None`` for a blank term."""
    arms = grant_search_arms(term)
    return reduce(or_, arms) if arms else None


def grant_search_ids(grants: QuerySet[TokenGrant], term: str, *, cap: int) -> set[int] | None:
    """The ids of the grants matching ``term``, each arm read from its own index, or
    ``None`` past ``cap`` matches (the caller then filters by the condition instead).

    Asked as one OR with the list's ORDER BY, PostgreSQL guesses a prefix's matches from the
    whole table's statistics and may walk the organisation's whole time index instead
    (3.6–7.5 s at a million grants for a prefix common in another organisation); each arm
    alone is an index range read (bench/audit_scale.py, ADR 0018).
    """
    ids: set[int] = set()
    for arm in grant_search_arms(term):
        ids.update(grants.filter(arm).order_by().values_list("pk", flat=True)[: cap + 1])
        if len(ids) > cap:
            return None
    return ids


# --- the auditor's dashboard: exact up to now, without reading the history -------------------
#
# ``UsageDaily`` holds every grant ``rollup_usage`` has counted: the organisation's ids up to its
# cursor. The rest (the tail: grants asked for in the last few minutes, or a stuck PENDING one
# and those after it) is read from the ``(organization, -requested_at)`` index, starting just
# before the cursor's own grant. Ids are handed out moments after ``requested_at`` is stamped,
# within ``AUDIT_SETTLE_SECONDS`` (the margin the rollup itself trusts), so no grant after the
# cursor was asked for earlier than that.

ISSUED = TokenGrant.Outcome.ISSUED
DENIED = (TokenGrant.Outcome.DENIED_QUOTA, TokenGrant.Outcome.DENIED_POLICY)
FAILED = (TokenGrant.Outcome.UPSTREAM_ERROR, TokenGrant.Outcome.ABANDONED)
# Which column each settled outcome counts in; PENDING counts nowhere until it settles.
_COLUMN = {ISSUED: 0, **dict.fromkeys(DENIED, 1), **dict.fromkeys(FAILED, 2)}

# name: (label, buckets, hourly)
USAGE_RANGES = {
    "24h": ("24 hours", 24, True),
    "7d": ("7 days", 7, False),
    "30d": ("30 days", 30, False),
    "90d": ("90 days", 90, False),
}
USAGE_RANGE_DEFAULT = "30d"
BREAKDOWN_TOP = 10
BREAKDOWN_ALL = 500  # "show all" still stops here
BREAKDOWNS = ("client_app", "profile", "key", "end_user")


@dataclass(frozen=True)
class UsageSpan:
    """A dashboard range: consecutive UTC hours or days, the last one holding ``now``."""

    name: str
    label: str
    hourly: bool
    buckets: tuple[datetime, ...]
    now: datetime

    @property
    def step(self) -> timedelta:
        return timedelta(hours=1) if self.hourly else timedelta(days=1)

    @property
    def start(self) -> datetime:
        return self.buckets[0]

    @property
    def end(self) -> datetime:
        return self.buckets[-1] + self.step


def usage_span(*, name: str, now: datetime) -> UsageSpan:
    """The range called ``name`` (an unknown name gives the default one) ending now."""
    name = name if name in USAGE_RANGES else USAGE_RANGE_DEFAULT
    label, count, hourly = USAGE_RANGES[name]
    now = now.astimezone(UTC)
    if hourly:
        last, step = now.replace(minute=0, second=0, microsecond=0), timedelta(hours=1)
    else:
        last, step = datetime.combine(now.date(), time.min, tzinfo=UTC), timedelta(days=1)
    buckets = tuple(last - step * back for back in range(count - 1, -1, -1))
    return UsageSpan(name, label, hourly, buckets, now)


@dataclass(frozen=True)
class Usage:
    """Settled grants by outcome column: issued, denied (quota or policy), failed."""

    issued: int = 0
    denied: int = 0
    errors: int = 0

    @property
    def total(self) -> int:
        return self.issued + self.denied + self.errors


@dataclass(frozen=True, kw_only=True)
class BucketUsage(Usage):
    start: datetime
    end: datetime


@dataclass(frozen=True, kw_only=True)
class BreakdownRow(Usage):
    value: str  # what the grants list filters on: a pk, a key prefix, an end user
    label: str


@dataclass(frozen=True)
class Breakdown:
    by: str
    rows: list[BreakdownRow]
    more: bool  # rows beyond ``limit`` exist


class _Tallies(dict):
    def add(self, key, outcome: str, n: int) -> None:
        column = _COLUMN.get(outcome)
        if column is not None and key is not None:
            self.setdefault(key, [0, 0, 0])[column] += n


def _rollup_cursor_id(organization: Organization) -> int:
    return (
        UsageRollupCursor.objects.filter(organization=organization)
        .values_list("last_grant_id", flat=True)
        .first()
    ) or 0


def _rollup_position(organization: Organization) -> tuple[int, datetime | None]:
    """The rollup cursor's grant id, and the earliest time a grant after it was asked for.

    Without a cursor nothing is rolled up yet; if the cursor's grant is gone (purged), its
    time is unknown and the tail is bounded by the range alone.
    """
    through = _rollup_cursor_id(organization)
    if not through:
        return 0, None
    asked_at = (
        TokenGrant.objects.filter(organization=organization, pk=through)
        .values_list("requested_at", flat=True)
        .first()
    )
    if asked_at is None:
        return through, None
    return through, asked_at - timedelta(seconds=settings.AUDIT_SETTLE_SECONDS)


def _grants_between(
    organization: Organization, start: datetime, end: datetime
) -> QuerySet[TokenGrant]:
    """A time slice of the organisation's grants: a range of ``(organization, -requested_at)``."""
    return TokenGrant.objects.filter(
        organization=organization, requested_at__gte=start, requested_at__lt=end
    ).order_by()


def _not_rolled_up(
    organization: Organization, span: UsageSpan, position: tuple[int, datetime | None]
) -> QuerySet[TokenGrant]:
    """The span's grants ``rollup_usage`` had not counted at ``position``, read from the
    index's newest end."""
    through, tail_from = position
    start = span.start if tail_from is None else max(span.start, tail_from)
    return _grants_between(organization, start, span.end).filter(id__gt=through)


def _rolled_up_and_tail(
    organization: Organization, span: UsageSpan, rolled_up: QuerySet, tail: Callable
) -> list[dict]:
    """The rollups' rows and the tail's (``tail(grants)`` groups them), each grant in exactly
    one: the cursor is read before and after, and the reading repeated if a rollup committed
    in between (it moves rows from the tail into the rollups in one transaction)."""
    for _ in range(3):
        position = _rollup_position(organization)
        rows = [*rolled_up.all(), *tail(_not_rolled_up(organization, span, position))]
        if _rollup_cursor_id(organization) == position[0]:
            break
    return rows


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def usage_buckets(*, organization: Organization, span: UsageSpan) -> list[BucketUsage]:
    """One entry per hour or day of ``span``, zeros where nothing happened.

    Hours are counted from the day's grants; days from the rollups plus the tail.
    """
    tallies = _Tallies()
    if span.hourly:
        rows = (
            _grants_between(organization, span.start, span.end)
            .annotate(bucket=TruncHour("requested_at", tzinfo=UTC))
            .values("bucket", "outcome")
            .annotate(n=Count("id"))
        )
        for row in rows:
            tallies.add(row["bucket"], row["outcome"], row["n"])
    else:
        rolled_up = (
            UsageDaily.objects.filter(organization=organization, day__gte=span.start.date())
            .values("day", "outcome")
            .annotate(n=Sum("count"))
            .order_by()
        )

        def tail(grants: QuerySet[TokenGrant]) -> QuerySet:
            return (
                grants.annotate(day=TruncDate("requested_at", tzinfo=UTC))
                .values("day", "outcome")
                .annotate(n=Count("id"))
            )

        for row in _rolled_up_and_tail(organization, span, rolled_up, tail):
            tallies.add(_day_start(row["day"]), row["outcome"], row["n"])
    return [
        BucketUsage(*tallies.get(start, (0, 0, 0)), start=start, end=start + span.step)
        for start in span.buckets
    ]


def usage_totals(buckets: list[BucketUsage]) -> Usage:
    return Usage(
        sum(b.issued for b in buckets),
        sum(b.denied for b in buckets),
        sum(b.errors for b in buckets),
    )


# For each breakdown: the grant column it groups by, and whether the rollups count it.
_BREAKDOWN_FIELDS = {
    "client_app": ("client_app_id", True),
    "profile": ("profile_id", True),
    "key": ("client_key_prefix", False),
    "end_user": ("end_user", False),
}


def usage_breakdown_reads_every_grant(*, span: UsageSpan, by: str) -> bool:
    """Whether ``usage_breakdown`` must group every grant of a range of days (keys and end
    users, which the rollups do not count): a cost that grows with the range, so the page
    asks for it (``?all=``) rather than paying it on every load. A day of hours is cheap."""
    return not span.hourly and not _BREAKDOWN_FIELDS[by][1]


def usage_breakdown(
    *, organization: Organization, span: UsageSpan, by: str, limit: int = BREAKDOWN_TOP
) -> Breakdown:
    """The apps, profiles, keys (by prefix) or end users with the most tokens issued in
    ``span`` (then the most refused), at most ``limit`` (capped at ``BREAKDOWN_ALL``).

    Apps and profiles over days come from the rollups plus the tail. The rollups do not count
    keys or end users, and hours are finer than a day: those are grouped from the span's
    grants, read from the ``(organization, -requested_at)`` index.
    """
    field, rolled_up = _BREAKDOWN_FIELDS[by]
    limit = max(1, min(limit, BREAKDOWN_ALL))
    if rolled_up and not span.hourly:
        tallies = _Tallies()
        rows = (
            UsageDaily.objects.filter(organization=organization, day__gte=span.start.date())
            .values(field, "outcome")
            .annotate(n=Sum("count"))
            .order_by()
        )
        for row in _rolled_up_and_tail(
            organization,
            span,
            rows,
            lambda grants: grants.values(field, "outcome").annotate(n=Count("id")),
        ):
            tallies.add(row[field], row["outcome"], row["n"])
        counted = sorted(
            ((value, *counts) for value, counts in tallies.items()),
            key=lambda row: (-row[1], -sum(row[2:]), row[0]),
        )
    else:
        grants = _grants_between(organization, span.start, span.end).exclude(
            **{f"{field}__isnull": True}
        )
        if not rolled_up:
            grants = grants.exclude(**{field: ""})
        totals = (
            grants.values(field)
            .annotate(
                issued=Count("id", filter=Q(outcome=ISSUED)),
                denied=Count("id", filter=Q(outcome__in=DENIED)),
                errors=Count("id", filter=Q(outcome__in=FAILED)),
            )
            .annotate(refused=F("denied") + F("errors"))
            .filter(Q(issued__gt=0) | Q(refused__gt=0))
            .order_by("-issued", "-refused", field)
        )
        counted = [
            (row[field], row["issued"], row["denied"], row["errors"]) for row in totals[: limit + 1]
        ]
    shown = counted[:limit]
    labels = _breakdown_labels(organization, by, [row[0] for row in shown])
    return Breakdown(
        by,
        [
            BreakdownRow(issued, denied, errors, value=str(value), label=labels.get(value, ""))
            for value, issued, denied, errors in shown
        ],
        more=len(counted) > limit,
    )


def _breakdown_labels(organization: Organization, by: str, values: list) -> dict:
    """What each row is called: an app's or profile's name, a key's label, the end user."""
    if by == "client_app":
        rows = ClientApp.objects.filter(organization=organization, pk__in=values)
        return dict(rows.values_list("pk", "name"))
    if by == "profile":
        rows = LiveConstraintProfile.objects.filter(organization=organization, pk__in=values)
        return dict(rows.values_list("pk", "name"))
    if by == "key":
        keys = ClientKey.objects.filter(organization=organization, prefix__in=values)
        named = {
            prefix: f"eph_{prefix}_… ({label or app})"
            for prefix, label, app in keys.values_list("prefix", "label", "client_app__name")
        }
        return {value: named.get(value, f"eph_{value}_… (deleted)") for value in values}
    return {value: value for value in values}


@dataclass(frozen=True)
class ActiveTokens:
    """Issued tokens not yet expired; how many may still open a new session; the next to go."""

    count: int
    opening: int
    next_expiries: list[datetime]


def tokens_active(*, organization: Organization, now: datetime, soonest: int = 3) -> ActiveTokens:
    """Read from the partial live-token and open-window indexes, never the whole table."""
    live = _tokens_live(now).filter(organization=organization)
    opening = TokenGrant.objects.filter(
        organization=organization,
        lifecycle=TokenGrant.Lifecycle.ACTIVE,
        new_session_expire_time__gt=now,
        expire_time__gt=now,
    ).order_by()
    return ActiveTokens(
        count=live.count(),
        opening=opening.count(),
        next_expiries=list(
            live.order_by("expire_time").values_list("expire_time", flat=True)[:soonest]
        ),
    )


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


# --- usage for finance: per UTC day, app and profile (GET /api/v1/usage, the admin's export) --

USAGE_MAX_DAYS = 366
_USAGE_KEY = ("day", "client_app_id", "profile_id", "outcome")


@dataclass(frozen=True)
class UsageRow:
    """One UTC day of one app and one profile. ``app`` is None for tokens members asked for
    in their own session, and for apps since deleted; ``profile`` is None for requests that
    named no profile of the organisation, and for profiles since deleted."""

    day: date
    app: str | None
    profile: str | None
    issued: int = 0
    denied: int = 0
    failed: int = 0


@dataclass(frozen=True)
class UsageReport:
    first: date
    last: date
    rows: list[UsageRow]

    @property
    def totals(self) -> dict[str, int]:
        return {
            name: sum(getattr(row, name) for row in self.rows)
            for name in ("issued", "denied", "failed")
        }


def client_app_by_id_or_name(*, organization: Organization, value: str) -> ClientApp | None:
    """The app a finance filter names: by its exact name, else by its id."""
    apps = ClientApp.objects.filter(organization=organization)
    app = apps.filter(name=value).first()
    if app is None and value.isdigit():
        app = apps.filter(pk=int(value)).first()
    return app


def profile_by_slug(*, organization: Organization, slug: str) -> LiveConstraintProfile | None:
    return LiveConstraintProfile.objects.filter(organization=organization, slug=slug).first()


def usage_report(
    *,
    organization: Organization,
    first: date,
    last: date,
    client_app: ClientApp | None = None,
    profile: LiveConstraintProfile | None = None,
) -> UsageReport:
    """Issued, denied and failed grants per UTC day, app and profile, ``first``…``last``.

    The daily rollups plus the grants ``rollup_usage`` has not counted yet (after its
    cursor: today's last minutes, or more while a grant is PENDING), so the numbers are
    current. PENDING grants are counted once they end. ``first``…``last`` is at most
    ``USAGE_MAX_DAYS`` days; the caller validates it.
    """
    filters = {}
    if client_app is not None:
        filters["client_app_id"] = client_app.pk
    if profile is not None:
        filters["profile_id"] = profile.pk
    counts = _usage_counts(organization, first, last, filters)
    apps = dict(
        ClientApp.objects.filter(
            organization=organization, pk__in={key[1] for key in counts}
        ).values_list("pk", "name")
    )
    profiles = dict(
        LiveConstraintProfile.objects.filter(
            organization=organization, pk__in={key[2] for key in counts}
        ).values_list("pk", "slug")
    )
    merged: dict[tuple, dict[str, int]] = {}
    for (day, app_id, profile_id, outcome), n in counts.items():
        column = (
            "issued"
            if outcome == TokenGrant.Outcome.ISSUED
            else "denied"
            if outcome in DENIED
            else "failed"
            if outcome in FAILED
            else None
        )
        if column is None or not n:
            continue
        key = (day, apps.get(app_id), profiles.get(profile_id))
        merged.setdefault(key, {"issued": 0, "denied": 0, "failed": 0})[column] += n
    rows = [
        UsageRow(day, app, slug, **columns)
        for (day, app, slug), columns in sorted(
            merged.items(), key=lambda item: (item[0][0], item[0][1] or "", item[0][2] or "")
        )
    ]
    return UsageReport(first, last, rows)


def _rollup_cursor(organization: Organization) -> int:
    return (
        UsageRollupCursor.objects.filter(organization=organization)
        .values_list("last_grant_id", flat=True)
        .first()
    ) or 0


def _usage_counts(
    organization: Organization, first: date, last: date, filters: dict
) -> dict[tuple, int]:
    """``(day, app id, profile id, outcome) → count`` from the rollups and the grants after
    their cursor, read as of one cursor.

    ``rollup_usage`` moves the cursor and adds to the rollups in one transaction, so the
    cursor is read before and after: if it moved meanwhile, the two reads may disagree
    (a batch counted in both, or in neither), and they are read again.
    """
    start = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
    # The last microsecond of ``last`` (the day after it may be past the calendar's end).
    end = datetime.combine(last, datetime.max.time(), tzinfo=UTC)
    through = _rollup_cursor(organization)
    for _attempt in range(5):
        counts: dict[tuple, int] = {}
        rolled_up = (
            UsageDaily.objects.filter(
                organization=organization, day__gte=first, day__lte=last, **filters
            )
            .values(*_USAGE_KEY)
            .annotate(n=Sum("count"))
            .order_by()
        )
        for row in rolled_up:
            key = tuple(row[name] for name in _USAGE_KEY)
            counts[key] = counts.get(key, 0) + row["n"]
        for row in _usage_not_rolled_up(organization, through, start, end, filters):
            key = tuple(row[name] for name in _USAGE_KEY)
            counts[key] = counts.get(key, 0) + row["n"]
        moved = _rollup_cursor(organization)
        if moved == through:
            break
        through = moved
    return counts


def _usage_not_rolled_up(
    organization: Organization, through: int, start: datetime, end: datetime, filters: dict
) -> QuerySet:
    """The grants after the rollup's cursor, from the ``(organization, -requested_at)`` index.

    The range starts at the cursor's own grant, less ``AUDIT_SETTLE_SECONDS``: a grant
    with a higher id was written after that one, and the rollup already relies on no
    grant being written later than that after it was asked for. So the index range is the
    few minutes since the last rollup, not the whole date range.
    """
    grants = TokenGrant.objects.filter(organization=organization)
    counted_until = grants.filter(pk=through).values_list("requested_at", flat=True).first()
    if counted_until is not None:
        start = max(start, counted_until - timedelta(seconds=settings.AUDIT_SETTLE_SECONDS))
    return (
        grants.filter(id__gt=through, requested_at__gte=start, requested_at__lte=end, **filters)
        .exclude(outcome=TokenGrant.Outcome.PENDING)
        .annotate(day=TruncDate("requested_at", tzinfo=UTC))
        .values(*_USAGE_KEY)
        .annotate(n=Count("id"))
        .order_by()
    )
