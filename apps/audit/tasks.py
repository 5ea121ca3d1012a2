"""The audit trail's upkeep (docs/architecture.md): each task records one CleanupRun around a
service. The grant lifecycle's two (expire_grants, reap_pending) are in the issuance app's
tasks, which owns the quota they give back."""

from celery import shared_task

from apps.audit import services


def _run(task: str, work) -> dict[str, int]:
    return services.cleanup_run_record(task, lambda tally: work(tally=tally)).counts


@shared_task(name="audit.seal_audit")
def seal_audit() -> dict[str, int]:
    return _run("seal_audit", services.audit_seal)


@shared_task(name="audit.rollup_usage")
def rollup_usage() -> dict[str, int]:
    return _run("rollup_usage", services.usage_rollup)


@shared_task(name="audit.purge_grants")
def purge_grants() -> dict[str, int]:
    return _run("purge_grants", services.grants_purge)
