"""Writes for profiles and quotas; every one is validated in full and recorded."""

from typing import Any

from django.utils import timezone

from apps.audit.models import PolicyChange
from apps.audit.services import audited
from apps.policies.models import LiveConstraintProfile, LiveConstraintProfileVersion, Quota
from apps.tenants.models import Organization, User
from apps.tenants.scoping import ensure_in_organization

CREATE, UPDATE, DELETE = PolicyChange.Action

PROFILE_EDITABLE_FIELDS = (
    "slug",
    "name",
    "description",
    "model",
    "config",
    "lock_mode",
    "lock_additional_fields",
    "uses",
    "expire_seconds",
    "new_session_seconds",
    "members_may_use",
    "is_active",
)


def _profile_version_save(profile: LiveConstraintProfile, actor: User | None) -> None:
    LiveConstraintProfileVersion.objects.create(
        organization_id=profile.organization_id,
        profile=profile,
        version=profile.version,
        snapshot=profile.as_version_snapshot(),
        created_by=actor if actor is not None and actor.pk else None,
    )


def profile_create(
    *, organization: Organization, actor: User | None, **fields: Any
) -> LiveConstraintProfile:
    unknown = set(fields) - set(PROFILE_EDITABLE_FIELDS)
    if unknown:
        raise TypeError(f"Not profile fields: {', '.join(sorted(unknown))}")
    profile = LiveConstraintProfile(organization=organization, version=1, **fields)
    profile.full_clean()
    with audited(organization=organization, actor=actor, instance=profile, action=CREATE):
        profile.save()
        _profile_version_save(profile, actor)
    return profile


def profile_update(
    *,
    organization: Organization,
    profile: LiveConstraintProfile,
    actor: User | None,
    **fields: Any,
) -> LiveConstraintProfile:
    """Apply changes; any real change bumps the version and keeps the old one readable."""
    ensure_in_organization(organization, profile)
    unknown = set(fields) - set(PROFILE_EDITABLE_FIELDS)
    if unknown:
        raise TypeError(f"Not profile fields: {', '.join(sorted(unknown))}")
    current = LiveConstraintProfile.objects.get(pk=profile.pk)
    for name, value in fields.items():
        setattr(profile, name, value)
    profile.full_clean()  # normalises config, so compare after it
    if all(getattr(profile, name) == getattr(current, name) for name in PROFILE_EDITABLE_FIELDS):
        return profile
    with audited(organization=organization, actor=actor, instance=current, action=UPDATE):
        for name in PROFILE_EDITABLE_FIELDS:
            setattr(current, name, getattr(profile, name))
        current.version = current.version + 1
        current.updated_at = timezone.now()
        current.save()
        _profile_version_save(current, actor)
    profile.version, profile.updated_at = current.version, current.updated_at
    return profile


def profile_delete(
    *, organization: Organization, profile: LiveConstraintProfile, actor: User | None
) -> None:
    ensure_in_organization(organization, profile)
    with audited(organization=organization, actor=actor, instance=profile, action=DELETE):
        profile.delete()


QUOTA_FIELDS = ("scope", "client_app", "profile", "window", "limit")


def quota_create(*, organization: Organization, actor: User | None, **fields: Any) -> Quota:
    quota = Quota(organization=organization, **fields)
    quota.full_clean()
    with audited(organization=organization, actor=actor, instance=quota, action=CREATE):
        quota.save()
    return quota


def quota_update(
    *, organization: Organization, quota: Quota, actor: User | None, **fields: Any
) -> Quota:
    ensure_in_organization(organization, quota)
    current = Quota.objects.get(pk=quota.pk)
    with audited(organization=organization, actor=actor, instance=current, action=UPDATE):
        for name, value in fields.items():
            setattr(current, name, value)
        current.full_clean()
        current.save()
    return current


def quota_delete(*, organization: Organization, quota: Quota, actor: User | None) -> None:
    ensure_in_organization(organization, quota)
    with audited(organization=organization, actor=actor, instance=quota, action=DELETE):
        quota.delete()
