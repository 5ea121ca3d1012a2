"""Reads for the tenancy core. Every lookup of tenant data names its organisation."""

from dataclasses import dataclass

from django.conf import settings
from django.db.models import QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404

from apps.tenants.models import (
    Domain,
    GeminiCredential,
    Invitation,
    Membership,
    Organization,
    Role,
    User,
)
from portal.crypto import decrypt_secret


@dataclass(frozen=True)
class GoogleIdentity:
    """The claims of a Google ID token that decide who may join which organisation."""

    email: str
    email_verified: bool
    hosted_domain: str | None

    @classmethod
    def from_claims(cls, claims: dict) -> "GoogleIdentity":
        verified = claims.get("email_verified", claims.get("verified_email", False))
        if isinstance(verified, str):  # some IdPs send "true"/"false"
            verified = verified.lower() == "true"
        hosted_domain = claims.get("hd")
        return cls(
            email=str(claims.get("email") or "").strip().lower(),
            email_verified=bool(verified),
            hosted_domain=str(hosted_domain).strip().lower() if hosted_domain else None,
        )


@dataclass(frozen=True)
class Entitlement:
    """One organisation an identity may join, with the role and the invitation granting it."""

    organization: Organization
    role: Role
    invitation: Invitation | None = None


def signin_entitlements(*, identity: GoogleIdentity) -> list[Entitlement]:
    """Organisations this identity may join: by verified `hd` domain or by exact invitation.

    The e-mail suffix is deliberately ignored: only Google's `hd` claim proves that the account
    is managed by a Workspace domain, and consumer accounts never carry one.
    """
    if not identity.email_verified or not identity.email:
        return []
    by_org: dict[int, Entitlement] = {}
    invitations = (
        Invitation.objects.pending()
        .filter(email__iexact=identity.email, organization__is_active=True)
        .select_related("organization")
        .order_by("created_at")
    )
    for invitation in invitations:
        by_org[invitation.organization_id] = Entitlement(
            invitation.organization, Role(invitation.role), invitation
        )
    if identity.hosted_domain:
        domains = Domain.objects.filter(
            name=identity.hosted_domain, is_verified=True, organization__is_active=True
        ).select_related("organization")
        for domain in domains:
            by_org.setdefault(domain.organization_id, Entitlement(domain.organization, Role.MEMBER))
    return list(by_org.values())


def memberships_for_user(*, user: User) -> QuerySet[Membership]:
    """The user's memberships in active organisations, which is all that grants access."""
    return (
        Membership.objects.filter(user=user, organization__is_active=True)
        .select_related("organization")
        .order_by("organization__name")
    )


def membership_get(*, organization: Organization, user: User) -> Membership | None:
    return Membership.objects.filter(organization=organization, user=user).first()


def membership_is_last_owner(*, membership: Membership) -> bool:
    """Whether removing or demoting this membership would leave its organisation ownerless."""
    if membership.role != Role.OWNER:
        return False
    return (
        not Membership.objects.filter(organization_id=membership.organization_id, role=Role.OWNER)
        .exclude(pk=membership.pk)
        .exists()
    )


def organization_get_for_user(*, user: User, organization_id: int | str | None) -> Organization:
    """An organisation the user may act in (any, for the operator); 404 otherwise."""
    try:
        organization_id = int(organization_id)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise Http404("No such organisation.") from None
    organizations = Organization.objects.all()
    if not user.is_superuser:
        organizations = organizations.filter(
            is_active=True, memberships__user=user, memberships__role__gte=Role.MEMBER
        )
    return get_object_or_404(organizations, pk=organization_id)


def organizations_switchable(
    *, user: User, min_role: Role = Role.AUDITOR
) -> QuerySet[Organization]:
    """Organisations offered in the admin's switcher: all for the operator, else by role."""
    if user.is_superuser:
        return Organization.objects.order_by("name")
    return Organization.objects.filter(
        is_active=True, memberships__user=user, memberships__role__gte=min_role
    ).order_by("name")


def gemini_api_key_for(*, organization: Organization) -> str:
    """The key issuance uses for this org: its own if set, else the platform's (may be empty)."""
    credential = GeminiCredential.objects.filter(organization=organization).first()
    if credential is not None:
        return decrypt_secret(credential.ciphertext)
    return settings.GEMINI_API_KEY


def is_operator_email(*, email: str) -> bool:
    """Whether the address is a platform operator's (the only one account mail may reach)."""
    return User.objects.filter(email__iexact=email, is_superuser=True).exists()
