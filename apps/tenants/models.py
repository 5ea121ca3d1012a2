"""Organisations, who belongs to them and how people get in (docs/architecture.md, "Tenancy")."""

import secrets

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

# Consumer Google accounts carry no `hd` claim, so these can never identify an organisation.
CONSUMER_GOOGLE_DOMAINS = frozenset({"gmail.com", "googlemail.com"})

domain_name_validator = RegexValidator(
    r"^(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))+$",
    "Enter a domain name such as example.com, in lower case.",
)


class User(AbstractUser):
    """Django's user, swappable from day one; identity data comes from Google."""

    # A user belongs to every organisation it is a member of (apps/tenants/scoping.py).
    organization_path = "memberships__organization"

    class Meta:
        db_table = "tenants_user"


class Role(models.IntegerChoices):
    """Ordered roles with gaps so a role can later slot in between without renumbering."""

    MEMBER = 1, "Member"
    AUDITOR = 4, "Auditor"
    ADMIN = 8, "Admin"
    OWNER = 15, "Owner"


# Gemini refuses expire and new-session times 20 hours or more ahead.
GEMINI_MAX_WINDOW_SECONDS = 20 * 3600 - 1


class Organization(models.Model):
    """A tenant, with the plan ceilings the platform operator sets for it."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64, unique=True)
    is_active = models.BooleanField(
        default=True, help_text="An inactive organisation's members cannot sign in or use it."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    # Plan ceilings: operator-set, never exceeded by a profile or a request.
    max_active_tokens = models.PositiveIntegerField(
        default=1000, help_text="Tokens that may be unexpired at once."
    )
    max_tokens_per_day = models.PositiveIntegerField(default=10000)
    max_expire_seconds = models.PositiveIntegerField(
        default=3600,
        validators=[MinValueValidator(1), MaxValueValidator(GEMINI_MAX_WINDOW_SECONDS)],
        help_text="Longest token lifetime a profile may grant.",
    )
    max_new_session_seconds = models.PositiveIntegerField(
        default=600,
        validators=[MinValueValidator(1), MaxValueValidator(GEMINI_MAX_WINDOW_SECONDS)],
        help_text="Longest window for starting new sessions with one token.",
    )
    max_uses = models.PositiveIntegerField(
        default=10,
        validators=[MinValueValidator(1)],
        help_text="Most sessions one token may start.",
    )
    allow_unlimited_uses = models.BooleanField(
        default=False, help_text="Whether a profile may set uses = 0 (unlimited)."
    )
    retention_days = models.PositiveIntegerField(
        default=365, validators=[MinValueValidator(1)], help_text="How long grants are kept."
    )
    # Bumped by every recorded policy change, so issuance may cache what it reads per version.
    policy_version = models.PositiveBigIntegerField(default=1, editable=False)

    CEILING_FIELDS = (
        "max_active_tokens",
        "max_tokens_per_day",
        "max_expire_seconds",
        "max_new_session_seconds",
        "max_uses",
        "allow_unlimited_uses",
        "retention_days",
    )

    class Meta:
        ordering = ["name"]
        verbose_name = "organisation"

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.PositiveSmallIntegerField(choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["organization", "user__email"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "user"], name="membership_one_per_user_and_org"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.get_role_display()})"


def domain_verification_token() -> str:
    """The random half of a domain's TXT record; not a secret once published."""
    return secrets.token_urlsafe(24)


class Domain(models.Model):
    """A Google Workspace domain; users whose ID token's `hd` equals it join as members."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="domains")
    name = models.CharField(max_length=253, unique=True, validators=[domain_name_validator])
    is_verified = models.BooleanField(
        default=False, help_text="Only the platform operator verifies a domain claim."
    )
    verified_at = models.DateTimeField(null=True, blank=True, editable=False)
    verified_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        editable=False,
    )
    # The org publishes ``ephemera-verification=<token>`` as a TXT record to prove control.
    verification_token = models.CharField(
        max_length=64, default=domain_verification_token, editable=False
    )
    last_checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_check_result = models.CharField(max_length=200, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean_fields(self, exclude=None) -> None:
        self.name = (self.name or "").strip().lower()  # before the lower-case validator runs
        super().clean_fields(exclude)

    def clean(self) -> None:
        if self.name in CONSUMER_GOOGLE_DOMAINS:
            raise ValidationError(
                {"name": "Consumer Google domains cannot be claimed by an organisation."}
            )


class InvitationQuerySet(models.QuerySet):
    def pending(self, now=None):
        now = now or timezone.now()
        return self.filter(accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=now)


class Invitation(models.Model):
    """Lets one exact e-mail address join with a given role, once, before it expires.

    Re-inviting an address revokes its open invitation (``invitation_create``), so at most
    one is open per organisation and address.
    """

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="invitations"
    )
    email = models.EmailField()
    role = models.PositiveSmallIntegerField(choices=Role.choices, default=Role.MEMBER)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        editable=False,
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True, editable=False)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        editable=False,
    )
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_sent_at = models.DateTimeField(null=True, blank=True, editable=False)
    send_count = models.PositiveSmallIntegerField(default=0, editable=False)

    objects = InvitationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.email} to {self.organization}"

    def clean(self) -> None:
        self.email = (self.email or "").strip().lower()

    @property
    def status(self) -> str:
        if self.accepted_at:
            return "accepted"
        if self.revoked_at:
            return "revoked"
        if self.expires_at and self.expires_at <= timezone.now():
            return "expired"
        return "pending"


class GeminiCredential(models.Model):
    """An organisation's own Gemini API key, encrypted at rest; never shown again in full."""

    organization = models.OneToOneField(
        Organization, on_delete=models.CASCADE, related_name="gemini_credential"
    )
    ciphertext = models.TextField(editable=False)
    last_four = models.CharField(max_length=4, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    audit_redacted_fields = ("ciphertext",)

    class Meta:
        verbose_name = "Gemini API key"

    def __str__(self) -> str:
        return f"Gemini API key …{self.last_four}"
