"""Writes for the tenancy core. Each takes the organisation explicitly and validates fully."""

from datetime import datetime, timedelta

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.tenants.models import Domain, Invitation, Membership, Organization, Role, User
from apps.tenants.selectors import GoogleIdentity, membership_is_last_owner, signin_entitlements

INVITATION_DEFAULT_TTL = timedelta(days=7)


def _require_operator(actor: User | None) -> None:
    if actor is not None and not actor.is_superuser:
        raise PermissionDenied("Only the platform operator can do this.")


def organization_create(*, name: str, slug: str, actor: User | None = None) -> Organization:
    _require_operator(actor)
    organization = Organization(name=name, slug=slug)
    organization.full_clean()
    organization.save()
    return organization


def organization_update(
    *, organization: Organization, actor: User | None = None, **fields
) -> Organization:
    _require_operator(actor)
    for name, value in fields.items():
        setattr(organization, name, value)
    organization.full_clean()
    organization.save()
    return organization


def domain_create(
    *, organization: Organization, name: str, is_verified: bool = False, actor: User | None = None
) -> Domain:
    """Claim a Workspace domain for an organisation; only the operator may claim or verify."""
    _require_operator(actor)
    domain = Domain(organization=organization, name=name.strip().lower())
    domain.full_clean()
    domain.save()
    if is_verified:
        domain_verify(organization=organization, domain=domain, actor=actor)
    return domain


def domain_verify(
    *, organization: Organization, domain: Domain, actor: User | None = None
) -> Domain:
    _require_operator(actor)
    if domain.organization_id != organization.pk:
        raise ValidationError("This domain belongs to another organisation.")
    if not domain.is_verified:
        domain.is_verified = True
        domain.verified_at = timezone.now()
        domain.save(update_fields=["is_verified", "verified_at"])
    return domain


def domain_update(
    *, organization: Organization, domain: Domain, name: str, is_verified: bool, actor: User | None
) -> Domain:
    _require_operator(actor)
    if domain.organization_id != organization.pk:
        raise ValidationError("This domain belongs to another organisation.")
    domain.name = name.strip().lower()
    domain.is_verified = is_verified
    domain.verified_at = (domain.verified_at or timezone.now()) if is_verified else None
    domain.full_clean()
    domain.save()
    return domain


def domain_delete(*, organization: Organization, domain: Domain, actor: User | None = None) -> None:
    _require_operator(actor)
    if domain.organization_id != organization.pk:
        raise ValidationError("This domain belongs to another organisation.")
    domain.delete()


def invitation_default_expiry() -> datetime:
    return timezone.now() + INVITATION_DEFAULT_TTL


@transaction.atomic
def invitation_create(
    *,
    organization: Organization,
    email: str,
    role: Role,
    invited_by: User | None,
    expires_at: datetime | None = None,
) -> Invitation:
    """Invite one address; a new invitation replaces any still-open one for the same address."""
    email = email.strip().lower()
    now = timezone.now()
    Invitation.objects.filter(
        organization=organization,
        email__iexact=email,
        accepted_at__isnull=True,
        revoked_at__isnull=True,
    ).update(revoked_at=now)
    invitation = Invitation(
        organization=organization,
        email=email,
        role=role,
        invited_by=invited_by,
        expires_at=expires_at or invitation_default_expiry(),
    )
    invitation.full_clean()
    if invitation.expires_at <= now:
        raise ValidationError({"expires_at": "The expiry must be in the future."})
    invitation.save()
    return invitation


def invitation_revoke(
    *, organization: Organization, invitation: Invitation, actor: User | None = None
) -> Invitation:
    if invitation.organization_id != organization.pk:
        raise ValidationError("This invitation belongs to another organisation.")
    if invitation.accepted_at is None and invitation.revoked_at is None:
        invitation.revoked_at = timezone.now()
        invitation.save(update_fields=["revoked_at"])
    return invitation


def _ensure_an_owner_remains(organization: Organization, leaving: Membership) -> None:
    # Lock the owners so two owners demoting each other at once cannot both succeed.
    list(Membership.objects.select_for_update().filter(organization=organization, role=Role.OWNER))
    if membership_is_last_owner(membership=leaving):
        raise ValidationError("An organisation must keep at least one owner.")


@transaction.atomic
def membership_create(
    *, organization: Organization, user: User, role: Role, actor: User | None = None
) -> Membership:
    membership = Membership(organization=organization, user=user, role=role)
    membership.full_clean()
    membership.save()
    return membership


@transaction.atomic
def membership_update_role(
    *, organization: Organization, membership: Membership, role: Role, actor: User | None = None
) -> Membership:
    if membership.organization_id != organization.pk:
        raise ValidationError("This membership belongs to another organisation.")
    if role != Role.OWNER:
        _ensure_an_owner_remains(organization, membership)
    membership.role = role
    membership.full_clean()
    membership.save(update_fields=["role"])
    return membership


@transaction.atomic
def membership_delete(
    *, organization: Organization, membership: Membership, actor: User | None = None
) -> None:
    if membership.organization_id != organization.pk:
        raise ValidationError("This membership belongs to another organisation.")
    _ensure_an_owner_remains(organization, membership)
    membership.delete()


def memberships_join_for_identity(*, user: User, identity: GoogleIdentity) -> list[Membership]:
    """Give a signed-in Google user every membership their identity entitles them to.

    Idempotent: a repeat sign-in finds the memberships already there. An invitation may raise
    an existing member's role but never lowers it; an accepted invitation is used up.
    """
    joined = []
    now = timezone.now()
    for entitlement in signin_entitlements(identity=identity):
        with transaction.atomic():
            try:
                with transaction.atomic():
                    membership, _ = Membership.objects.get_or_create(
                        organization=entitlement.organization,
                        user=user,
                        defaults={"role": entitlement.role},
                    )
            except IntegrityError:  # a concurrent sign-in created it first
                membership = Membership.objects.get(
                    organization=entitlement.organization, user=user
                )
            if membership.role < entitlement.role:
                membership.role = entitlement.role
                membership.save(update_fields=["role"])
            if entitlement.invitation is not None:
                Invitation.objects.filter(
                    pk=entitlement.invitation.pk, accepted_at__isnull=True
                ).update(accepted_at=now, accepted_by=user)
        joined.append(membership)
    return joined
