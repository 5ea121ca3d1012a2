"""Reads for the tenancy core. Every lookup of tenant data names its organisation."""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from django.conf import settings
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone

from apps.audit.models import TokenGrant
from apps.clients.models import ClientApp, ClientKey
from apps.policies.models import LiveConstraintProfile
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


def gemini_upstream_is_sandbox() -> bool:
    """Whether tokens come from a stand-in upstream rather than Google.

    The same rule marks each issued token ``"sandbox": true`` (apps/issuance/services.py):
    any ``GEMINI_BASE_URL`` at all is a sandbox, since production leaves it unset.
    """
    return bool(settings.GEMINI_BASE_URL)


class StepState(StrEnum):
    DONE = "done"
    WAITING = "waiting"  # started; someone else (the operator, DNS, an invitee) acts next
    TODO = "todo"
    SANDBOX = "sandbox"  # not needed while the sandbox upstream mints the tokens


@dataclass(frozen=True)
class ChecklistStep:
    """One step of an organisation's onboarding, as its real state stands now.

    ``target_id`` names the row the step's page is about (a domain's pending claim, an app
    still lacking a key, the live profile whose client guide gets the first token), so the
    admin can link straight to it.
    """

    key: str
    title: str
    state: StepState
    explanation: str
    target_id: int | None = None

    @property
    def done(self) -> bool:
        return self.state in (StepState.DONE, StepState.SANDBOX)


def onboarding_checklist(*, organization: Organization) -> list[ChecklistStep]:
    """What stands between this organisation and its first real token, read from its rows.

    Computed on every visit (one query per step, nothing stored), so a step flips the moment
    its row changes and an undone action undoes the step.
    """
    return [
        _domain_step(organization),
        _gemini_step(organization),
        _profile_step(organization),
        _client_app_step(organization),
        _first_token_step(organization),
        _auditor_step(organization),
    ]


def _domain_step(organization: Organization) -> ChecklistStep:
    domain = (
        Domain.objects.filter(organization=organization)
        .order_by("-is_verified", "name")
        .values("pk", "name", "is_verified")
        .first()
    )
    title = "Verify your Google Workspace domain"
    if domain is None:
        return ChecklistStep(
            "domain",
            title,
            StepState.TODO,
            "Once a domain is verified, colleagues who sign in with Google on it join as members.",
        )
    if domain["is_verified"]:
        return ChecklistStep(
            "domain",
            title,
            StepState.DONE,
            f"{domain['name']} is verified: colleagues signing in with Google on it join.",
        )
    return ChecklistStep(
        "domain",
        title,
        StepState.WAITING,
        f"{domain['name']} is claimed: publish its TXT record, then the operator verifies it.",
        domain["pk"],
    )


def _gemini_step(organization: Organization) -> ChecklistStep:
    last_four = (
        GeminiCredential.objects.filter(organization=organization)
        .values_list("last_four", flat=True)
        .first()
    )
    title = "Add your Gemini API key"
    if last_four is not None:
        return ChecklistStep(
            "gemini", title, StepState.DONE, f"Your own key ending …{last_four} mints the tokens."
        )
    if gemini_upstream_is_sandbox():
        return ChecklistStep(
            "gemini",
            title,
            StepState.SANDBOX,
            "Issuing from the sandbox: no Google key is used until the platform leaves it.",
        )
    if settings.GEMINI_API_KEY:
        return ChecklistStep(
            "gemini",
            title,
            StepState.DONE,
            "The platform's key mints your tokens; add your own to bill your Google project.",
        )
    return ChecklistStep(
        "gemini",
        title,
        StepState.TODO,
        "Without a key every token request fails with an upstream error.",
    )


def _profile_step(organization: Organization) -> ChecklistStep:
    profile = (
        LiveConstraintProfile.objects.filter(organization=organization, is_active=True)
        .order_by("name")
        .values("pk", "slug")
        .first()
    )
    title = "Create a Live profile"
    if profile is None:
        return ChecklistStep(
            "profile",
            title,
            StepState.TODO,
            "A profile fixes the model and setup a token may open, and for how long.",
        )
    return ChecklistStep(
        "profile",
        title,
        StepState.DONE,
        f"“{profile['slug']}” is live: apps may ask for tokens under it.",
        profile["pk"],
    )


def _client_app_step(organization: Organization) -> ChecklistStep:
    now = timezone.now()
    usable_keys = ClientKey.objects.filter(
        organization=organization, client_app=OuterRef("pk"), revoked_at__isnull=True
    ).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
    app = (
        ClientApp.objects.filter(organization=organization, is_active=True)
        .annotate(has_key=Exists(usable_keys))
        .order_by("-has_key", "name")
        .values("pk", "name", "has_key")
        .first()
    )
    title = "Register a client app and create its key"
    if app is None:
        return ChecklistStep(
            "client_app",
            title,
            StepState.TODO,
            "Your backend presents the app's key to ask for tokens for its users.",
        )
    if app["has_key"]:
        return ChecklistStep(
            "client_app",
            title,
            StepState.DONE,
            f"{app['name']} has a working key.",
            app["pk"],
        )
    return ChecklistStep(
        "client_app",
        title,
        StepState.TODO,
        f"{app['name']} has no working key yet: create one on its page.",
        app["pk"],
    )


def _first_token_step(organization: Organization) -> ChecklistStep:
    # Served by the (organization, outcome, -requested_at) index.
    issued = TokenGrant.objects.filter(
        organization=organization, outcome=TokenGrant.Outcome.ISSUED
    ).exists()
    title = "Issue your first token"
    if issued:
        return ChecklistStep(
            "first_token",
            title,
            StepState.DONE,
            "Tokens have been issued; the audit trail has them.",
        )
    return ChecklistStep(
        "first_token",
        title,
        StepState.TODO,
        "Ask for one with the curl in a profile's client guide, using your app's key.",
    )


def _auditor_step(organization: Organization) -> ChecklistStep:
    auditors = Membership.objects.filter(organization=organization, role=Role.AUDITOR)
    invitations = Invitation.objects.pending().filter(organization=organization, role=Role.AUDITOR)
    found = (
        Organization.objects.filter(pk=organization.pk)
        .values(
            present=Exists(auditors),
            invited=Subquery(invitations.order_by("created_at").values("email")[:1]),
        )
        .first()
    ) or {"present": False, "invited": None}
    title = "Invite an auditor"
    if found["present"]:
        return ChecklistStep(
            "auditor",
            title,
            StepState.DONE,
            "An auditor reviews every token issued and when it expires.",
        )
    if found["invited"]:
        return ChecklistStep(
            "auditor",
            title,
            StepState.DONE,
            f"{found['invited']} is invited as auditor and joins on first sign-in.",
        )
    return ChecklistStep(
        "auditor",
        title,
        StepState.TODO,
        "Someone outside the admins who reviews every token issued and when it expires.",
    )


# --- invitations, members and the operator's list of organisations -------------------------


def invitation_open_for_email(*, organization: Organization, email: str) -> Invitation | None:
    """The address's invitation that still lets it in, if any: one is enough (resend it)."""
    return (
        Invitation.objects.pending()
        .filter(organization=organization, email__iexact=email.strip())
        .order_by("-created_at")
        .first()
    )


def membership_for_email(*, organization: Organization, email: str) -> Membership | None:
    """The membership of whoever signs in with this address, if they already belong."""
    return (
        Membership.objects.filter(organization=organization, user__email__iexact=email.strip())
        .select_related("user")
        .first()
    )


def portal_signin_url(*, request_base_url: str) -> str:
    """The absolute sign-in address an invitation carries.

    ``PORTAL_URL`` when set, the public address whoever builds the link. Otherwise the address
    the inviting owner's own request came in on: behind deploy/'s proxy that is the public one
    too (the proxy passes the Host, and uvicorn believes its X-Forwarded-Proto).
    """
    base = settings.PORTAL_URL or request_base_url
    return f"{base.rstrip('/')}{reverse('account_login')}"


def organizations_with_activity(
    *, queryset: QuerySet[Organization], since: datetime
) -> QuerySet[Organization]:
    """Each organisation with ``member_count`` and ``tokens_issued`` (grants issued since
    ``since``), counted by the database in the same query as the list: no query per row.

    Grants are counted by ``requested_at``, which leads the (organisation, outcome, time)
    index; a token is issued within the upstream timeout of its request.
    """
    members = (
        Membership.objects.filter(organization=OuterRef("pk"))
        .order_by()
        .values("organization")
        .annotate(count=Count("pk"))
        .values("count")
    )
    issued = (
        TokenGrant.objects.filter(
            organization=OuterRef("pk"),
            outcome=TokenGrant.Outcome.ISSUED,
            requested_at__gte=since,
        )
        .order_by()
        .values("organization")
        .annotate(count=Count("pk"))
        .values("count")
    )
    return queryset.annotate(
        member_count=Coalesce(Subquery(members), 0),
        tokens_issued=Coalesce(Subquery(issued), 0),
    )
