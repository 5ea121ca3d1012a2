import functools
from dataclasses import dataclass
from datetime import timedelta

from django.db.models import QuerySet
from django.utils import timezone

from apps.clients.models import ClientApp
from apps.policies.live_schema import WirePreview, token_config, wire_preview
from apps.policies.models import LiveConstraintProfile, LiveConstraintProfileVersion
from apps.tenants.models import Organization


def profile_versions(
    *, organization: Organization, profile: LiveConstraintProfile
) -> QuerySet[LiveConstraintProfileVersion]:
    return LiveConstraintProfileVersion.objects.filter(organization=organization, profile=profile)


def profile_version_get(
    *, organization: Organization, profile: LiveConstraintProfile, version: int
) -> LiveConstraintProfileVersion:
    return profile_versions(organization=organization, profile=profile).get(version=version)


def profile_wire_preview(*, profile: LiveConstraintProfile, now=None) -> WirePreview:
    """The body the SDK would send for a token minted now under this profile's defaults."""
    now = now or timezone.now()
    return wire_preview(
        token_config(
            model=profile.model,
            config=profile.config,
            lock_additional_fields=profile.sdk_lock_additional_fields,
            uses=profile.uses,
            expire_time=now + timedelta(seconds=profile.expire_seconds),
            new_session_expire_time=now + timedelta(seconds=profile.new_session_seconds),
        )
    )


@dataclass(frozen=True)
class ProfileLock:
    """What a token under a profile locks (the API's ``lock`` and ``locked_fields``)."""

    lock: str
    locked_fields: tuple[str, ...]


def profile_lock(*, profile: LiveConstraintProfile) -> ProfileLock:
    """The lock of a token minted under this profile now, from its wire preview.

    A preview runs the SDK (about 60 ms), so it is remembered per profile version: every real
    change bumps ``version``, and ``created_at`` tells a reused id (SQLite may hand a deleted
    profile's id to a new one) from the old profile. Raises ``pydantic.ValidationError`` or
    ``ValueError`` for a stored config the SDK no longer accepts (a row older than the SDK).
    """
    return _profile_lock((profile.pk, profile.created_at, profile.version), profile)


@functools.lru_cache(maxsize=1024)
def _profile_lock(key: tuple, profile: LiveConstraintProfile) -> ProfileLock:
    """Cached by ``key`` (the profile itself compares by id); the token's times and uses do
    not change what it locks."""
    preview = profile_wire_preview(profile=profile)
    return ProfileLock(lock=preview.lock, locked_fields=tuple(preview.locked_fields))


def profile_client_apps(*, profile: LiveConstraintProfile) -> QuerySet[ClientApp]:
    """The organisation's apps whose keys may ask for tokens under this profile."""
    return ClientApp.objects.filter(
        organization=profile.organization_id, allowed_profiles=profile
    ).order_by("name")
