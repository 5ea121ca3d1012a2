"""Writes to the audit trail. Called by other apps' services inside their transactions."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import transaction
from django.db.models import F, Model

from apps.audit.models import PolicyChange
from apps.audit.snapshots import snapshot
from apps.tenants.models import Organization, User


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
