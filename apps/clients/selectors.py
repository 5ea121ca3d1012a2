import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.core.cache import cache
from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone
from redis.exceptions import RedisError

from apps.audit.models import TokenGrant, UsageDaily, UsageRollupCursor
from apps.clients.keys import parse_key, usable_key
from apps.clients.models import ClientApp, ClientKey
from apps.tenants.models import Organization

# What a cache backend raises when its server is down (Redis) or its folder is unwritable.
CACHE_ERRORS = (RedisError, OSError)
REGISTERED_ORIGINS_CACHE_KEY = "clients:registered-origins"


def client_key_list(*, organization: Organization, client_app: ClientApp) -> QuerySet[ClientKey]:
    return ClientKey.objects.filter(organization=organization, client_app=client_app)


# --- tokens issued, per app and per key: today and the last 7 UTC days ------------------

USAGE_DAYS = 7
ISSUED = TokenGrant.Outcome.ISSUED


@dataclass(frozen=True)
class IssuedCounts:
    today: int = 0  # this UTC day
    week: int = 0  # the last 7 UTC days, today included


def _usage_window(today: date | None) -> tuple[date, date, datetime, datetime]:
    today = today or timezone.now().astimezone(UTC).date()
    first = today - timedelta(days=USAGE_DAYS - 1)
    return (
        today,
        first,
        datetime.combine(today, time.min, tzinfo=UTC),
        datetime.combine(first, time.min, tzinfo=UTC),
    )


def client_app_issued_counts(
    *, organization: Organization, app_ids: Iterable[int], today: date | None = None
) -> dict[int, IssuedCounts]:
    """Tokens issued per app, today and over the last 7 days, for a whole list of apps at once.

    The daily rollups (``UsageDaily``) plus the grants ``rollup_usage`` has not counted yet
    (those after its cursor, a few minutes' worth): exact, and read from the rollups rather
    than a week of grants however busy the apps are. Apps with no tokens are left out.
    """
    app_ids = list(app_ids)
    today, first, today_start, first_start = _usage_window(today)
    counts: dict[int, list[int]] = {}
    rolled_up = (
        UsageDaily.objects.filter(
            organization=organization, client_app_id__in=app_ids, outcome=ISSUED, day__gte=first
        )
        .values("client_app_id")
        .annotate(today=Sum("count", filter=Q(day=today)), week=Sum("count"))
        .order_by()
    )
    counted_through = (
        UsageRollupCursor.objects.filter(organization=organization)
        .values_list("last_grant_id", flat=True)
        .first()
    ) or 0
    not_yet_rolled_up = (
        TokenGrant.objects.filter(
            organization=organization,
            client_app_id__in=app_ids,
            outcome=ISSUED,
            id__gt=counted_through,
            requested_at__gte=first_start,
        )
        .values("client_app_id")
        .annotate(today=Count("id", filter=Q(requested_at__gte=today_start)), week=Count("id"))
        .order_by()
    )
    for row in [*rolled_up, *not_yet_rolled_up]:
        total = counts.setdefault(row["client_app_id"], [0, 0])
        total[0] += row["today"] or 0
        total[1] += row["week"] or 0
    return {app_id: IssuedCounts(*pair) for app_id, pair in counts.items()}


def client_key_issued_counts(
    *, organization: Organization, app_ids: Iterable[int], today: date | None = None
) -> dict[str, IssuedCounts]:
    """Tokens issued per key (by prefix) of these apps, today and over the last 7 days.

    The rollups do not count per key, so this counts the apps' issued grants of the week:
    one query, over the ``(organization, client_app, -requested_at)`` index.
    """
    _, _, today_start, first_start = _usage_window(today)
    rows = (
        TokenGrant.objects.filter(
            organization=organization,
            client_app_id__in=list(app_ids),
            outcome=ISSUED,
            requested_at__gte=first_start,
        )
        .exclude(client_key_prefix="")
        .values("client_key_prefix")
        .annotate(today=Count("id", filter=Q(requested_at__gte=today_start)), week=Count("id"))
        .order_by()
    )
    return {row["client_key_prefix"]: IssuedCounts(row["today"], row["week"]) for row in rows}


def client_key_authenticate(*, raw_key: str, now=None) -> ClientKey | None:
    """The usable key behind a presented ``eph_…`` string, or None. The key names its org.

    Revoked keys and keys past their rotation deadline fail here. A disabled app or org is
    refused later, by issuance, so that the attempt is audited inside that organisation.
    The token endpoint looks keys up through issuance's store (the same lookup, compiled
    once: apps/issuance/store/sql.py) and decides with the same ``usable_key``.
    """
    parsed = parse_key(raw_key)
    key = (
        ClientKey.objects.select_related("client_app", "organization")
        .filter(prefix=parsed.prefix)
        .first()
        if parsed
        else None
    )
    return usable_key(parsed, key, now or timezone.now())


def origin_is_registered(*, origin: str) -> bool:
    """Whether any active app lists this browser origin (answers CORS preflights only).

    A preflight carries no key, so it cannot be scoped to one app; the real request is then
    checked against its own app's origins. The set is cached briefly: preflights are cheap.
    """
    try:
        origins = cache.get(REGISTERED_ORIGINS_CACHE_KEY)
    except CACHE_ERRORS:  # the cache (Redis) is down: the database still knows
        return origin in _registered_origins()
    if origins is None:
        origins = _registered_origins()
        with contextlib.suppress(CACHE_ERRORS):
            cache.set(REGISTERED_ORIGINS_CACHE_KEY, origins, 60)
    return origin in origins


def _registered_origins() -> list[str]:
    return sorted(
        {
            item
            for listed in ClientApp.objects.filter(is_active=True).values_list(
                "allowed_origins", flat=True
            )
            for item in listed or ()
        }
    )
