from django.db.models import QuerySet

from apps.issuance.contract import Caller
from apps.policies.models import LiveConstraintProfile


def profiles_for_caller(*, caller: Caller) -> QuerySet[LiveConstraintProfile]:
    """Active profiles this caller may request: its app's list, or those open to members."""
    profiles = LiveConstraintProfile.objects.filter(
        organization=caller.organization, is_active=True
    )
    if caller.client_app is not None:
        return profiles.filter(client_apps=caller.client_app)
    return profiles.filter(members_may_use=True)
