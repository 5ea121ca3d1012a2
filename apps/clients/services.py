"""Writes for client apps and their keys; every one is recorded as a PolicyChange."""

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from apps.audit.models import PolicyChange
from apps.audit.services import audited
from apps.clients.keys import generate_key
from apps.clients.models import ClientApp, ClientKey
from apps.policies.models import LiveConstraintProfile
from apps.tenants.models import Organization, User
from apps.tenants.scoping import ensure_in_organization

CREATE, UPDATE, DELETE = PolicyChange.Action
MAX_ROTATION_GRACE = timedelta(days=30)


def _set_allowed_profiles(
    organization: Organization, app: ClientApp, profiles: Iterable[LiveConstraintProfile]
) -> None:
    profiles = list(profiles)
    ensure_in_organization(organization, *profiles)
    app.allowed_profiles.set(profiles)


def client_app_create(
    *,
    organization: Organization,
    actor: User | None,
    name: str,
    allowed_profiles: Iterable[LiveConstraintProfile] = (),
    **fields: Any,
) -> ClientApp:
    app = ClientApp(organization=organization, name=name, **fields)
    app.full_clean()
    with audited(organization=organization, actor=actor, instance=app, action=CREATE):
        app.save()
        _set_allowed_profiles(organization, app, allowed_profiles)
    return app


def client_app_update(
    *,
    organization: Organization,
    client_app: ClientApp,
    actor: User | None,
    allowed_profiles: Iterable[LiveConstraintProfile] | None = None,
    **fields: Any,
) -> ClientApp:
    ensure_in_organization(organization, client_app)
    current = ClientApp.objects.get(pk=client_app.pk)
    with audited(organization=organization, actor=actor, instance=current, action=UPDATE):
        for name, value in fields.items():
            setattr(current, name, value)
        current.full_clean()
        current.save()
        if allowed_profiles is not None:
            _set_allowed_profiles(organization, current, allowed_profiles)
    return current


def client_app_delete(
    *, organization: Organization, client_app: ClientApp, actor: User | None
) -> None:
    ensure_in_organization(organization, client_app)
    with audited(organization=organization, actor=actor, instance=client_app, action=DELETE):
        client_app.delete()


def client_key_create(
    *,
    organization: Organization,
    client_app: ClientApp,
    actor: User | None,
    label: str = "",
    scope: str = ClientKey.Scope.ISSUE,
) -> tuple[ClientKey, str]:
    """A new key for the app. The full key is returned once and never stored.

    ``scope`` is what the key may do, for good: issue tokens, or read the organisation's
    usage (docs/adr/0019-read-only-usage-keys.md)."""
    ensure_in_organization(organization, client_app)
    raw_key, prefix, secret_hash = generate_key()
    key = ClientKey(
        organization=organization,
        client_app=client_app,
        prefix=prefix,
        secret_hash=secret_hash,
        label=label,
        scope=scope,
        created_by=actor if actor is not None and actor.pk else None,
    )
    key.full_clean()
    with audited(organization=organization, actor=actor, instance=key, action=CREATE):
        key.save()
    return key, raw_key


@transaction.atomic
def client_key_rotate(
    *,
    organization: Organization,
    key: ClientKey,
    actor: User | None,
    grace_until: datetime,
    label: str = "",
) -> tuple[ClientKey, str]:
    """Issue a replacement now; the old key keeps working until ``grace_until``, then stops.

    The replacement is named ``label``, or after the old key when none is given. A key
    already rotating out is refused, under a row lock: a double-submitted form must not make
    a second live replacement nobody saw, nor move the first one's deadline."""
    ensure_in_organization(organization, key)
    now = timezone.now()
    if grace_until < now - timedelta(minutes=1):
        raise ValidationError({"grace_until": "The grace deadline cannot be in the past."})
    grace_until = max(grace_until, now)  # "stop the old key now", however late it arrives
    if grace_until > now + MAX_ROTATION_GRACE:
        raise ValidationError({"grace_until": "The grace period is at most 30 days."})
    with transaction.atomic():
        locked = ClientKey.objects.select_for_update().get(pk=key.pk, organization=organization)
        if not locked.is_usable(now):
            raise ValidationError("Only a working key can be rotated.")
        if locked.expires_at is not None:
            raise ValidationError(
                "This key is already being rotated out: its replacement exists. Revoke the "
                "replacement or this key if either was never used."
            )
        new_key, raw_key = client_key_create(
            organization=organization,
            client_app=locked.client_app,
            actor=actor,
            label=label or locked.label or f"rotated from eph_{locked.prefix}",
            scope=locked.scope,  # a replacement may do what the old key did, no more
        )
        with audited(organization=organization, actor=actor, instance=locked, action=UPDATE):
            locked.expires_at = grace_until
            locked.save(update_fields=["expires_at"])
    key.expires_at = locked.expires_at
    return new_key, raw_key


def client_key_revoke(
    *, organization: Organization, key: ClientKey, actor: User | None
) -> ClientKey:
    """Stop a key at once."""
    ensure_in_organization(organization, key)
    if key.revoked_at is None:
        with audited(organization=organization, actor=actor, instance=key, action=UPDATE):
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
    return key
