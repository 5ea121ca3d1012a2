from django.db.models import QuerySet

from apps.issuance.contract import Caller
from apps.policies.models import LiveConstraintProfile
from apps.policies.selectors import ProfileLock, profile_lock


def profiles_for_caller(*, caller: Caller) -> QuerySet[LiveConstraintProfile]:
    """Active profiles this caller may request: its app's list, or those open to members."""
    profiles = LiveConstraintProfile.objects.filter(
        organization=caller.organization, is_active=True
    )
    if caller.client_app is not None:
        return profiles.filter(client_apps=caller.client_app)
    return profiles.filter(members_may_use=True)


def profile_locks_for_caller(*, caller: Caller) -> list[tuple[LiveConstraintProfile, ProfileLock]]:
    """The caller's profiles, each with what a token under it locks: one query, and a wire
    preview only for a profile version not seen before (policies' selectors remember them)."""
    return [
        (profile, profile_lock(profile=profile)) for profile in profiles_for_caller(caller=caller)
    ]
