"""What issuance reads about an organisation, cached per policy version.

Every recorded policy change bumps ``Organization.policy_version`` in the same transaction
(apps.audit.services.audited), and the caller's organisation row is read fresh with its key
on every request, so a cached entry can never outlive the policy it describes.
"""

import threading
from collections import OrderedDict
from dataclasses import dataclass

from apps.clients.models import ClientApp
from apps.policies.models import LiveConstraintProfile, Quota
from apps.tenants.models import Organization
from apps.tenants.selectors import gemini_api_key_for

CACHE_SIZE = 1024


@dataclass(frozen=True)
class IssuancePolicy:
    profiles: dict[str, LiveConstraintProfile]
    app_profiles: dict[int, frozenset[int]]
    quotas: tuple[Quota, ...]
    api_key: str


_cache: OrderedDict[tuple, IssuancePolicy] = OrderedDict()
_lock = threading.Lock()


def _load(organization: Organization) -> IssuancePolicy:
    allowed = ClientApp.allowed_profiles.through.objects.filter(
        clientapp__organization=organization
    ).values_list("clientapp_id", "liveconstraintprofile_id")
    app_profiles: dict[int, set[int]] = {}
    for app_id, profile_id in allowed:
        app_profiles.setdefault(app_id, set()).add(profile_id)
    return IssuancePolicy(
        profiles={
            profile.slug: profile
            for profile in LiveConstraintProfile.objects.filter(organization=organization)
        },
        app_profiles={app_id: frozenset(ids) for app_id, ids in app_profiles.items()},
        quotas=tuple(Quota.objects.filter(organization=organization)),
        api_key=gemini_api_key_for(organization=organization),
    )


def _key(organization: Organization) -> tuple:
    # created_at too: SQLite may hand a deleted organisation's id to a new one.
    return (organization.pk, organization.created_at, organization.policy_version)


def cached_issuance_policy(organization: Organization) -> IssuancePolicy | None:
    """The cached policy, or None: no query (the event loop's path asks this first)."""
    key = _key(organization)
    with _lock:
        policy = _cache.get(key)
        if policy is not None:
            _cache.move_to_end(key)
        return policy


def issuance_policy_for(organization: Organization) -> IssuancePolicy:
    policy = cached_issuance_policy(organization)
    if policy is not None:
        return policy
    key = _key(organization)
    policy = _load(organization)
    with _lock:
        _cache[key] = policy
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return policy


def clear() -> None:
    with _lock:
        _cache.clear()
