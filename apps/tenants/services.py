"""Writes for the tenancy core. Each takes the organisation explicitly, validates fully and
records a PolicyChange in the same transaction."""

import logging
import smtplib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, transaction
from django.db.models import F
from django.template.loader import render_to_string
from django.utils import timezone

from apps.audit.models import PolicyChange
from apps.audit.services import audited
from apps.tenants import domain_dns
from apps.tenants.models import (
    Domain,
    GeminiCredential,
    Invitation,
    Membership,
    Organization,
    Role,
    User,
)
from apps.tenants.roles import ROLE_DESCRIPTIONS
from apps.tenants.scoping import ensure_in_organization
from apps.tenants.selectors import (
    GoogleIdentity,
    membership_get,
    membership_is_last_owner,
    signin_entitlements,
)
from portal.crypto import SecretUnreadable, encrypt_secret, reencrypt_secret
from portal.mail import email_enabled

INVITATION_DEFAULT_TTL = timedelta(days=7)
# Longer, and an invitation outlives the owner's memory of who was asked in.
INVITATION_MAX_TTL = timedelta(days=30)
CREATE, UPDATE, DELETE = PolicyChange.Action


def _require_operator(actor: User | None) -> None:
    """None is the system itself (seeding, migrations); a person must be the operator."""
    if actor is not None and not actor.is_superuser:
        raise PermissionDenied("Only the platform operator can do this.")


# --- organisations and plan ceilings (operator) -------------------------------------------


def organization_create(
    *, name: str, slug: str, actor: User | None = None, **ceilings
) -> Organization:
    _require_operator(actor)
    organization = Organization(name=name, slug=slug, **ceilings)
    organization.full_clean()
    with audited(organization=organization, actor=actor, instance=organization, action=CREATE):
        organization.save()
    return organization


def organization_update(
    *, organization: Organization, actor: User | None = None, **fields
) -> Organization:
    """Rename, (de)activate or change the plan ceilings of an organisation."""
    _require_operator(actor)
    with audited(organization=organization, actor=actor, instance=organization, action=UPDATE):
        for name, value in fields.items():
            setattr(organization, name, value)
        organization.full_clean()
        organization.save()
    return organization


# --- domains (operator claims and verifies; owners only see them) -------------------------


def domain_create(
    *, organization: Organization, name: str, is_verified: bool = False, actor: User | None = None
) -> Domain:
    """Claim a Workspace domain for an organisation."""
    _require_operator(actor)
    domain = Domain(
        organization=organization,
        name=name,
        is_verified=is_verified,
        verified_at=timezone.now() if is_verified else None,
        verified_by=_person(actor) if is_verified else None,
    )
    domain.full_clean()
    with audited(organization=organization, actor=actor, instance=domain, action=CREATE):
        domain.save()
    return domain


def domain_update(
    *,
    organization: Organization,
    domain: Domain,
    name: str,
    is_verified: bool,
    actor: User | None = None,
) -> Domain:
    """The operator renames a claim or (un)verifies it; who verified it and when is kept."""
    _require_operator(actor)
    ensure_in_organization(organization, domain)
    with audited(organization=organization, actor=actor, instance=domain, action=UPDATE):
        if name != domain.name:  # a DNS check of the old name proves nothing about the new
            domain.last_checked_at, domain.last_check_result = None, ""
        domain.name = name
        if is_verified and not domain.is_verified:
            domain.verified_at, domain.verified_by = timezone.now(), _person(actor)
        elif not is_verified:
            domain.verified_at, domain.verified_by = None, None
        domain.is_verified = is_verified
        domain.full_clean()
        domain.save()
    return domain


def domain_verify(
    *, organization: Organization, domain: Domain, actor: User | None = None
) -> Domain:
    """The operator's decision, recorded with who made it; a DNS check only informs it."""
    if domain.is_verified:
        return domain
    return domain_update(
        organization=organization, domain=domain, name=domain.name, is_verified=True, actor=actor
    )


def domain_delete(*, organization: Organization, domain: Domain, actor: User | None = None) -> None:
    _require_operator(actor)
    ensure_in_organization(organization, domain)
    with audited(organization=organization, actor=actor, instance=domain, action=DELETE):
        domain.delete()


def _person(actor: User | None) -> User | None:
    """The actor to name on a row: None for the system itself (seeding, migrations)."""
    return actor if actor is not None and actor.pk else None


def _require_domain_checker(organization: Organization, actor: User) -> None:
    """Running a DNS check is an admin's or owner's (or the operator's) act, not an auditor's."""
    if actor.is_superuser:
        return
    membership = membership_get(organization=organization, user=actor)
    if membership is None or membership.role < Role.ADMIN:
        raise PermissionDenied("Only an admin or owner of the organisation can check its domains.")


def domain_check_dns(*, organization: Organization, domain: Domain, actor: User) -> Domain:
    """Look up the claim's TXT record now and record what was found, audited.

    A found record does not verify the domain: the operator still decides (``domain_verify``),
    seeing the result and who checked in the audit trail. The lookup runs before the
    transaction opens, so a slow DNS server never holds a database transaction.
    """
    _require_domain_checker(organization, actor)
    ensure_in_organization(organization, domain)
    result = domain_dns.txt_check(domain_name=domain.name, token=domain.verification_token)
    with audited(organization=organization, actor=actor, instance=domain, action=UPDATE):
        domain.last_checked_at = timezone.now()
        domain.last_check_result = str(result)
        domain.save(update_fields=["last_checked_at", "last_check_result"])
    return domain


# --- invitations (owners) -----------------------------------------------------------------


def invitation_default_expiry() -> datetime:
    return timezone.now() + INVITATION_DEFAULT_TTL


def invitation_expiry_validate(expires_at: datetime) -> None:
    """An expiry the invitee can still meet, and not so far off that it is forgotten."""
    now = timezone.now()
    if expires_at <= now:
        raise ValidationError(
            "This expiry has already passed: pick a date and time in the future.", code="past"
        )
    latest = now + INVITATION_MAX_TTL
    if expires_at > latest:
        raise ValidationError(
            "An invitation may stay open for at most %(days)d days: pick a date and time "
            "before %(latest)s.",
            code="too_far",
            params={
                "days": INVITATION_MAX_TTL.days,
                "latest": timezone.localtime(latest).strftime("%Y-%m-%d %H:%M"),
            },
        )


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
    if expires_at is not None:
        try:
            invitation_expiry_validate(expires_at)
        except ValidationError as error:
            raise ValidationError({"expires_at": error.error_list}) from None
    open_ones = Invitation.objects.filter(
        organization=organization,
        email__iexact=email,
        accepted_at__isnull=True,
        revoked_at__isnull=True,
    )
    for previous in open_ones:
        invitation_revoke(organization=organization, invitation=previous, actor=invited_by)
    invitation = Invitation(
        organization=organization,
        email=email,
        role=role,
        invited_by=invited_by,
        expires_at=expires_at or invitation_default_expiry(),
    )
    invitation.full_clean()
    with audited(organization=organization, actor=invited_by, instance=invitation, action=CREATE):
        invitation.save()
    return invitation


def invitation_revoke(
    *, organization: Organization, invitation: Invitation, actor: User | None = None
) -> Invitation:
    ensure_in_organization(organization, invitation)
    if invitation.accepted_at is None and invitation.revoked_at is None:
        with audited(organization=organization, actor=actor, instance=invitation, action=UPDATE):
            invitation.revoked_at = timezone.now()
            invitation.save(update_fields=["revoked_at"])
    return invitation


logger = logging.getLogger("ephemera.invitations")


class InvitationDelivery(StrEnum):
    SENT = "sent"
    FAILED = "failed"  # the mail server refused it or was out of reach; the invitation stands
    DISABLED = "disabled"  # this portal sends no e-mail (no EMAIL_URL in production)
    THROTTLED = "throttled"  # sent too recently or too often: the portal is nobody's relay


# An owner may send an invitation again, but the platform's sender must not become a way to
# mail an address over and over.
INVITATION_RESEND_INTERVAL = timedelta(minutes=5)
INVITATION_MAX_SENDS = 5


def invitation_send(
    *,
    organization: Organization,
    invitation: Invitation,
    signin_url: str,
    actor: User | None,
) -> InvitationDelivery:
    """E-mail an open invitation, the first time or again, and record the sending.

    Called outside any transaction: a slow mail server must not hold a database lock. The
    mail server's failure is an answer, not an exception: the invitation stays open and the
    owner hands the link over another way. Only a sent e-mail is recorded (and audited).
    """
    ensure_in_organization(organization, invitation)
    if invitation.status != "pending":
        raise ValidationError(
            f"This invitation is {invitation.status}: only an open invitation can be sent."
        )
    if not email_enabled():
        return InvitationDelivery.DISABLED
    invitation.refresh_from_db(fields=["last_sent_at", "send_count"])
    if invitation_send_throttled(invitation):
        return InvitationDelivery.THROTTLED
    try:
        _invitation_email(organization, invitation, signin_url).send(fail_silently=False)
    except (smtplib.SMTPException, OSError) as error:
        # The class only: a server's reply may quote what it was sent, never the password,
        # but nothing here needs more than what kind of failure it was.
        logger.warning(
            "invitation_email_failed",
            extra={
                "organization": organization.slug,
                "invitation": invitation.pk,
                "error": type(error).__name__,
            },
        )
        return InvitationDelivery.FAILED
    with audited(organization=organization, actor=actor, instance=invitation, action=UPDATE):
        Invitation.objects.filter(pk=invitation.pk).update(
            last_sent_at=timezone.now(), send_count=F("send_count") + 1
        )
        invitation.refresh_from_db(fields=["last_sent_at", "send_count"])
    return InvitationDelivery.SENT


def invitation_send_throttled(invitation: Invitation, now: datetime | None = None) -> bool:
    """Whether sending this invitation again now would be one send too many or too soon."""
    now = now or timezone.now()
    if invitation.send_count >= INVITATION_MAX_SENDS:
        return True
    last = invitation.last_sent_at
    return last is not None and now - last < INVITATION_RESEND_INTERVAL


def _invitation_email(
    organization: Organization, invitation: Invitation, signin_url: str
) -> EmailMultiAlternatives:
    inviter = invitation.invited_by
    role = Role(invitation.role)
    context = {
        "organization": organization.name,
        "inviter": (inviter.get_full_name() or inviter.email or inviter.username)
        if inviter is not None
        else "Ephemera",
        "email": invitation.email,
        "role": role.label,
        "role_description": ROLE_DESCRIPTIONS[role],
        "expires_at": timezone.localtime(invitation.expires_at),
        "signin_url": signin_url,
    }
    subject = render_to_string("tenants/email/invitation_subject.txt", context)
    message = EmailMultiAlternatives(
        subject=" ".join(subject.split()),
        body=render_to_string("tenants/email/invitation.txt", context),
        to=[invitation.email],
        reply_to=[inviter.email] if inviter is not None and inviter.email else None,
    )
    html = render_to_string("tenants/email/invitation.html", context)
    message.attach_alternative(html, "text/html")
    return message


# --- memberships (owners; people join through sign-in) -------------------------------------


def _ensure_an_owner_remains(organization: Organization, leaving: Membership) -> None:
    # Lock the owners so two owners demoting each other at once cannot both succeed.
    list(Membership.objects.select_for_update().filter(organization=organization, role=Role.OWNER))
    if membership_is_last_owner(membership=leaving):
        raise ValidationError("An organisation must keep at least one owner.")


def membership_create(
    *, organization: Organization, user: User, role: Role, actor: User | None = None
) -> Membership:
    membership = Membership(organization=organization, user=user, role=role)
    membership.full_clean()
    with audited(organization=organization, actor=actor, instance=membership, action=CREATE):
        membership.save()
    return membership


def membership_update_role(
    *, organization: Organization, membership: Membership, role: Role, actor: User | None = None
) -> Membership:
    ensure_in_organization(organization, membership)
    with audited(organization=organization, actor=actor, instance=membership, action=UPDATE):
        if role != Role.OWNER:
            _ensure_an_owner_remains(organization, membership)
        membership.role = role
        membership.full_clean()
        membership.save(update_fields=["role"])
    return membership


def membership_delete(
    *, organization: Organization, membership: Membership, actor: User | None = None
) -> None:
    ensure_in_organization(organization, membership)
    with audited(organization=organization, actor=actor, instance=membership, action=DELETE):
        _ensure_an_owner_remains(organization, membership)
        membership.delete()


def memberships_join_for_identity(*, user: User, identity: GoogleIdentity) -> list[Membership]:
    """Give a signed-in Google user every membership their identity entitles them to.

    Idempotent: a repeat sign-in finds the memberships already there. An invitation may raise
    an existing member's role but never lowers it; an accepted invitation is used up.
    """
    joined = []
    for entitlement in signin_entitlements(identity=identity):
        organization = entitlement.organization
        with transaction.atomic():
            membership = Membership.objects.filter(organization=organization, user=user).first()
            if membership is None:
                try:
                    membership = membership_create(
                        organization=organization, user=user, role=entitlement.role, actor=user
                    )
                except (IntegrityError, ValidationError):  # a concurrent sign-in was first
                    membership = Membership.objects.get(organization=organization, user=user)
            elif membership.role < entitlement.role:
                membership = membership_update_role(
                    organization=organization,
                    membership=membership,
                    role=entitlement.role,
                    actor=user,
                )
            if entitlement.invitation is not None:
                _invitation_accept(entitlement.invitation, user)
        joined.append(membership)
    return joined


def _invitation_accept(invitation: Invitation, user: User) -> None:
    with audited(
        organization=invitation.organization, actor=user, instance=invitation, action=UPDATE
    ):
        invitation.accepted_at = timezone.now()
        invitation.accepted_by = user
        invitation.save(update_fields=["accepted_at", "accepted_by"])


# --- the organisation's Gemini API key (owners) -------------------------------------------


def gemini_credential_set(
    *, organization: Organization, api_key: str, actor: User | None
) -> GeminiCredential:
    """Store (or replace) the org's Gemini key, encrypted; only its last four stay readable."""
    api_key = api_key.strip()
    if len(api_key) < 8 or any(ch.isspace() for ch in api_key):
        raise ValidationError({"api_key": "This does not look like a Gemini API key."})
    credential = GeminiCredential.objects.filter(organization=organization).first()
    action = UPDATE if credential else CREATE
    credential = credential or GeminiCredential(organization=organization)
    with audited(organization=organization, actor=actor, instance=credential, action=action):
        credential.ciphertext = encrypt_secret(api_key)
        credential.last_four = api_key[-4:]
        credential.updated_at = timezone.now()
        credential.save()
    return credential


def gemini_credential_clear(*, organization: Organization, actor: User | None) -> None:
    """Forget the org's key; issuance falls back to the platform's GEMINI_API_KEY."""
    credential = GeminiCredential.objects.filter(organization=organization).first()
    if credential is not None:
        with audited(organization=organization, actor=actor, instance=credential, action=DELETE):
            credential.delete()


@dataclass
class ReencryptionResult:
    rotated: int = 0
    unreadable: list[str] = field(default_factory=list)  # organisation slugs, never secrets


def gemini_credentials_reencrypt() -> ReencryptionResult:
    """Put every stored Gemini key under the newest FIELD_ENCRYPTION_KEYS entry.

    The step between adding a key in front and dropping the old one (deploy/OPERATOR.md).
    The secret itself does not change, so no PolicyChange is recorded and ``updated_at``
    stays. A row is swapped only if its ciphertext is still the one read, so an owner setting
    a new key meanwhile wins. Rows no configured key opens are named, not touched.
    """
    result = ReencryptionResult()
    rows = GeminiCredential.objects.select_related("organization").order_by("pk")
    for credential in rows.iterator(chunk_size=500):
        try:
            fresh = reencrypt_secret(credential.ciphertext)
        except SecretUnreadable:
            result.unreadable.append(credential.organization.slug)
            continue
        result.rotated += GeminiCredential.objects.filter(
            pk=credential.pk, ciphertext=credential.ciphertext
        ).update(ciphertext=fresh)
    return result
