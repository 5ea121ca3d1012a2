"""The grant lifecycle's beat tasks (docs/architecture.md, "The audit trail"): each records one
CleanupRun around a service in ``lifecycle.py``.

The Celery names keep their ``audit.`` prefix from before the move: the beat schedule and the
messages already queued in the broker name them so, and a renamed task would be refused as
unregistered by workers on either side of a deploy. The CleanupRun task names are the ones
the dashboard, ``/metrics`` and the alerts use."""

from celery import shared_task

from apps.audit.services import cleanup_run_record
from apps.issuance import lifecycle


@shared_task(name="audit.expire_grants")
def expire_grants() -> dict[str, int]:
    return cleanup_run_record(
        "expire_grants", lambda tally: lifecycle.grants_expire(tally=tally)
    ).counts


@shared_task(name="audit.reap_pending")
def reap_pending() -> dict[str, int]:
    return cleanup_run_record(
        "reap_pending", lambda tally: lifecycle.grants_reap_pending(tally=tally)
    ).counts
