"""The tenant's applications that call the issuance API, and their keys
(docs/architecture.md, "Secrets")."""

from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

KEY_PREFIX_LENGTH = 12


def validate_origins(value) -> None:
    """Browser origins exactly as the Origin header carries them: scheme://host[:port]."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValidationError("Enter a list of origins such as https://app.example.com.")
    for origin in value:
        parts = urlsplit(origin)
        if (
            parts.scheme not in ("https", "http")
            or not parts.hostname
            or parts.path not in ("",)
            or parts.query
            or parts.fragment
            or parts.username
        ):
            raise ValidationError(
                f"'{origin}' is not an origin: use scheme://host[:port] with no path."
            )


class ClientApp(models.Model):
    organization = models.ForeignKey(
        "tenants.Organization", on_delete=models.CASCADE, related_name="client_apps"
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    allowed_profiles = models.ManyToManyField(
        "policies.LiveConstraintProfile",
        blank=True,
        related_name="client_apps",
        help_text="Profiles this app may request tokens for.",
    )
    allowed_origins = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_origins],
        help_text='Browser origins allowed by CORS, e.g. ["https://app.example.com"].',
    )
    is_active = models.BooleanField(default=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    audit_m2m_fields = ("allowed_profiles",)

    class Meta:
        ordering = ["name"]
        verbose_name = "client app"
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="app_name_unique_per_org")
        ]

    def __str__(self) -> str:
        return self.name


class ClientKey(models.Model):
    """``eph_<prefix>_<secret>``: the prefix finds the row, the secret is kept only as a hash.

    A key does one thing, chosen when it is made (docs/adr/0019-read-only-usage-keys.md):
    an ``issue`` key asks for tokens and reads nothing; a ``read_usage`` key reads its
    organisation's usage (``GET /api/v1/usage``) and is refused a token.
    """

    class Scope(models.TextChoices):
        ISSUE = "issue", "Issue tokens"
        READ_USAGE = "read_usage", "Read usage"

    organization = models.ForeignKey(
        "tenants.Organization", on_delete=models.CASCADE, related_name="client_keys"
    )
    client_app = models.ForeignKey(ClientApp, on_delete=models.CASCADE, related_name="keys")
    prefix = models.CharField(max_length=KEY_PREFIX_LENGTH, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    label = models.CharField(max_length=100, blank=True)
    scope = models.CharField(
        max_length=16, choices=Scope.choices, default=Scope.ISSUE, editable=False
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    expires_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Set when rotated: the grace deadline."
    )
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    audit_redacted_fields = ("secret_hash",)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "client key"

    def __str__(self) -> str:
        return f"eph_{self.prefix}_…"

    def status(self, now=None) -> str:
        now = now or timezone.now()
        if self.revoked_at:
            return "revoked"
        if self.expires_at and self.expires_at <= now:
            return "expired"
        if self.expires_at:
            return "rotating out"
        return "active"

    def is_usable(self, now=None) -> bool:
        return self.status(now) in ("active", "rotating out")
