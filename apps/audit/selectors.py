from django.db.models import QuerySet

from apps.audit.models import PolicyChange
from apps.tenants.models import Organization


def policy_change_list(
    *, organization: Organization, object_type: str | None = None, object_id: str | None = None
) -> QuerySet[PolicyChange]:
    changes = PolicyChange.objects.filter(organization=organization)
    if object_type:
        changes = changes.filter(object_type=object_type)
    if object_id is not None:
        changes = changes.filter(object_id=str(object_id))
    return changes
