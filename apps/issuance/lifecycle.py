"""The issued grant's lifecycle after the request (docs/architecture.md, "The audit trail"):
expiry at each grant's own deadlines, and reaping the PENDING grants a dead process left behind,
with their quota given back. Issuance owns the reservations, so it owns their refund; the audit
app only records each run (``cleanup_run_record``)."""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from apps.audit.models import TokenGrant
from apps.audit.services import RunTally
from apps.issuance.quotas import (
    QuotaBackendUnavailable,
    Reservation,
    quota_counters_prune,
    quota_engine,
)

Outcome = TokenGrant.Outcome
Lifecycle = TokenGrant.Lifecycle


def grants_expire(*, tally: RunTally, now: datetime | None = None) -> None:
    """Move issued grants along ACTIVE → SESSION_WINDOW_CLOSED → EXPIRED.

    Each step's time is the moment it happened (the grant's own deadline), not when this
    task noticed, so running late or twice gives the same rows.
    """
    now = now or timezone.now()
    batch = settings.AUDIT_BATCH_SIZE
    live = TokenGrant.LIVE_LIFECYCLES
    while rows := list(
        TokenGrant.objects.filter(lifecycle__in=live, expire_time__lte=now)
        .order_by()
        .values_list("id", "organization_id")[:batch]
    ):
        TokenGrant.objects.filter(id__in=[row[0] for row in rows], lifecycle__in=live).update(
            lifecycle=Lifecycle.EXPIRED,
            expired_at=F("expire_time"),
            session_window_closed_at=Coalesce(
                "session_window_closed_at", "new_session_expire_time"
            ),
        )
        tally.add_rows(rows, "expired")
    while rows := list(
        TokenGrant.objects.filter(lifecycle=Lifecycle.ACTIVE, new_session_expire_time__lte=now)
        .order_by()
        .values_list("id", "organization_id")[:batch]
    ):
        TokenGrant.objects.filter(
            id__in=[row[0] for row in rows], lifecycle=Lifecycle.ACTIVE
        ).update(
            lifecycle=Lifecycle.SESSION_WINDOW_CLOSED,
            session_window_closed_at=F("new_session_expire_time"),
        )
        tally.add_rows(rows, "session_window_closed")
    # The quota engine's ended windows go with the tokens they counted.
    pruned = quota_counters_prune(now=now, batch=batch)
    if pruned:
        tally.platform["quota_counters_pruned"] += pruned


REAPED_DETAIL = (
    "No outcome was recorded within twice the upstream timeout (the process handling the "
    "request stopped); the quota it reserved was returned."
)


def grants_reap_pending(*, tally: RunTally, now: datetime | None = None) -> None:
    """PENDING grants older than twice the upstream timeout become ABANDONED, refunded.

    The claim (PENDING → ABANDONED) and the refund commit together; if the quota store is
    down, the grant stays PENDING and the next run tries again, so no reservation is lost.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(milliseconds=2 * settings.GEMINI_TIMEOUT_MS)
    stale = (
        TokenGrant.objects.filter(outcome=Outcome.PENDING, requested_at__lt=cutoff)
        .order_by("id")
        .values_list("id", "organization_id", "quota_reservation")
    )
    after = 0
    while rows := list(stale.filter(id__gt=after)[: settings.AUDIT_BATCH_SIZE]):
        after = rows[-1][0]
        for grant_id, organization_id, reservation in rows:
            try:
                with transaction.atomic():
                    claimed = TokenGrant.objects.filter(
                        pk=grant_id, outcome=Outcome.PENDING
                    ).update(
                        outcome=Outcome.ABANDONED,
                        error_code="abandoned",
                        detail=REAPED_DETAIL,
                        quota_reservation=None,
                    )
                    if claimed and reservation:
                        quota_engine().refund(Reservation.from_json(reservation))
            except QuotaBackendUnavailable:
                tally.add(organization_id, "refund_deferred")
                continue
            tally.add(organization_id, "abandoned", claimed)
