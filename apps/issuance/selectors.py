import logging

import pydantic
from django.db.models import QuerySet

from apps.issuance.contract import Caller
from apps.policies.models import LiveConstraintProfile
from apps.policies.selectors import ProfileLock, profile_lock

logger = logging.getLogger(__name__)


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
    preview only for a profile version not seen before (policies' selectors remember them).

    A profile whose stored config the SDK no longer accepts is left out (and logged) rather
    than failing the whole list: no token could be minted under it either.
    """
    locked = []
    for profile in profiles_for_caller(caller=caller):
        try:
            locked.append((profile, profile_lock(profile=profile)))
        except (pydantic.ValidationError, ValueError) as error:
            logger.warning(
                "profile %s of %s left out: its config no longer previews (%s)",
                profile.slug,
                caller.organization.slug,
                type(error).__name__,
            )
    return locked
