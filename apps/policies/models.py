"""What may be issued (Live constraint profiles) and how often (quotas)."""

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from apps.policies.live_schema import (
    LiveConfigError,
    lock_problems,
    lockable_field_names,
    validate_live_config,
)
from apps.tenants.models import GEMINI_MAX_WINDOW_SECONDS


class LockMode(models.TextChoices):
    """How the token's setup binds the client; maps 1:1 to the SDK's lock_additional_fields."""

    WHOLE_SETUP = "whole_setup", "Whole setup: the token's setup replaces the client's"
    FIELDS_SET = "fields_set", "Fields set here: only the fields this profile sets are locked"
    FIELDS_SET_PLUS = "fields_set_plus", "Fields set here, plus the listed fields"


class LiveConstraintProfile(models.Model):
    organization = models.ForeignKey(
        "tenants.Organization", on_delete=models.CASCADE, related_name="profiles"
    )
    slug = models.SlugField(max_length=64, help_text="What client apps name in their requests.")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    model = models.CharField(max_length=100, help_text="A Live-capable Gemini model.")
    config = models.JSONField(
        default=dict, blank=True, help_text="LiveConnectConfig fields as JSON (snake_case)."
    )
    lock_mode = models.CharField(
        max_length=16, choices=LockMode.choices, default=LockMode.WHOLE_SETUP
    )
    lock_additional_fields = models.JSONField(
        default=list,
        blank=True,
        help_text="With 'plus the listed fields': names such as temperature or tools.",
    )
    uses = models.PositiveIntegerField(
        default=1, help_text="Sessions one token may start; 0 = unlimited (if the plan allows)."
    )
    expire_seconds = models.PositiveIntegerField(
        default=1800, validators=[MinValueValidator(1)], help_text="Token lifetime."
    )
    new_session_seconds = models.PositiveIntegerField(
        default=60,
        validators=[MinValueValidator(1)],
        help_text="Window in which a token may start new sessions.",
    )
    members_may_use = models.BooleanField(
        default=False, help_text="Signed-in members may request tokens from the browser."
    )
    is_active = models.BooleanField(default=True)
    version = models.PositiveIntegerField(default=1, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]
        verbose_name = "Live constraint profile"
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "slug"], name="profile_slug_unique_per_org"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"

    @property
    def sdk_lock_additional_fields(self) -> list[str] | None:
        """The value the SDK takes: None locks the whole setup, [] the fields set, a list more."""
        if self.lock_mode == LockMode.WHOLE_SETUP:
            return None
        if self.lock_mode == LockMode.FIELDS_SET:
            return []
        return list(self.lock_additional_fields)

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}

        def add(field: str, message: str) -> None:
            errors.setdefault(field, []).append(message)

        if (
            self.model
            and self.model not in settings.GEMINI_LIVE_MODELS
            and not self._keeps_stored_model()
        ):
            add(
                "model",
                f"'{self.model}' is not a Live model this platform allows; choose one of "
                + ", ".join(settings.GEMINI_LIVE_MODELS)
                + ".",
            )
        try:
            self.config = validate_live_config(self.config)
        except LiveConfigError as error:
            for message in error.messages:
                add("config", message)
        self._clean_lock(add)
        if not errors.get("config") and not errors.get("lock_additional_fields"):
            self._clean_mask(add)
        self._clean_windows(add)
        if errors:
            raise ValidationError(errors)

    def _keeps_stored_model(self) -> bool:
        """A model the platform no longer offers may stay on a profile that already has it,
        so an admin can edit other settings before choosing its successor."""
        if self.pk is None:
            return False
        stored = LiveConstraintProfile.objects.filter(pk=self.pk, model=self.model)
        return stored.exists()

    def _clean_lock(self, add) -> None:
        extra = self.lock_additional_fields
        if self.lock_mode != LockMode.FIELDS_SET_PLUS:
            if extra:
                add("lock_additional_fields", "Only used with 'plus the listed fields'.")
            return
        if not isinstance(extra, list) or not all(isinstance(n, str) for n in extra):
            add("lock_additional_fields", "Must be a list of field names.")
            return
        if not extra:
            add("lock_additional_fields", "List at least one field, or lock the fields set.")
        allowed = lockable_field_names()
        for name in extra:
            if name not in allowed:
                add("lock_additional_fields", f"'{name}' is not a Live setting.")

    def _clean_mask(self, add) -> None:
        """Refuse a lock Google would refuse: it would fail every token minted under it."""
        problems = lock_problems(
            model=self.model or settings.GEMINI_LIVE_MODELS[0],
            config=self.config,
            lock_additional_fields=self.sdk_lock_additional_fields,
        )
        for field, messages in problems.items():
            for message in messages:
                add(field, message)

    def _clean_windows(self, add) -> None:
        organization = self.organization if self.organization_id else None
        limits = (
            ("expire_seconds", self.expire_seconds, "max_expire_seconds", "plan's max expire"),
            (
                "new_session_seconds",
                self.new_session_seconds,
                "max_new_session_seconds",
                "plan's max new-session window",
            ),
        )
        for field, value, ceiling_field, ceiling_name in limits:
            if value is None:
                continue
            if value > GEMINI_MAX_WINDOW_SECONDS:
                add(field, "Gemini requires less than 20 hours (71999 seconds at most).")
            elif organization and value > getattr(organization, ceiling_field):
                ceiling = getattr(organization, ceiling_field)
                add(field, f"Above the {ceiling_name} ({ceiling} seconds).")
        if (
            self.new_session_seconds is not None
            and self.expire_seconds is not None
            and self.new_session_seconds > self.expire_seconds
        ):
            add("new_session_seconds", "Cannot be longer than the token's lifetime.")
        if organization and self.uses is not None:
            if self.uses == 0 and not organization.allow_unlimited_uses:
                add("uses", "Unlimited uses (0) are not allowed by the plan.")
            elif self.uses > organization.max_uses:
                add("uses", f"Above the plan's max uses ({organization.max_uses}).")

    def as_version_snapshot(self) -> dict[str, Any]:
        """The fields that decide what a token may do, frozen per version for the audit."""
        return {
            "slug": self.slug,
            "name": self.name,
            "model": self.model,
            "config": self.config,
            "lock_mode": self.lock_mode,
            "lock_additional_fields": self.lock_additional_fields,
            "uses": self.uses,
            "expire_seconds": self.expire_seconds,
            "new_session_seconds": self.new_session_seconds,
            "members_may_use": self.members_may_use,
            "is_active": self.is_active,
        }


class LiveConstraintProfileVersion(models.Model):
    """Every saved state of a profile, so a grant can always show the policy it was issued under."""

    organization = models.ForeignKey(
        "tenants.Organization", on_delete=models.CASCADE, related_name="+"
    )
    profile = models.ForeignKey(
        LiveConstraintProfile, on_delete=models.CASCADE, related_name="versions"
    )
    version = models.PositiveIntegerField()
    snapshot = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-version"]
        constraints = [
            models.UniqueConstraint(fields=["profile", "version"], name="profile_version_unique")
        ]

    def __str__(self) -> str:
        return f"{self.profile.slug} v{self.version}"


class Quota(models.Model):
    """A rate limit on issuance; every quota that applies to a request is checked at once."""

    class Scope(models.TextChoices):
        ORG = "org", "Whole organisation"
        CLIENT_APP = "client_app", "One client app"
        PROFILE = "profile", "One profile"
        END_USER = "end_user", "Each end user"

    class Window(models.TextChoices):
        MINUTE = "minute", "per minute"
        HOUR = "hour", "per hour"
        DAY = "day", "per day"

    WINDOW_SECONDS = {Window.MINUTE: 60, Window.HOUR: 3600, Window.DAY: 86400}

    organization = models.ForeignKey(
        "tenants.Organization", on_delete=models.CASCADE, related_name="quotas"
    )
    scope = models.CharField(max_length=16, choices=Scope.choices)
    client_app = models.ForeignKey(
        "clients.ClientApp",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="quotas",
        help_text="Required for 'one client app'; narrows 'each end user' to one app.",
    )
    profile = models.ForeignKey(
        LiveConstraintProfile,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="quotas",
        help_text="Required for 'one profile'; narrows 'each end user' to one profile.",
    )
    window = models.CharField(max_length=8, choices=Window.choices)
    limit = models.PositiveIntegerField(validators=[MinValueValidator(1)])
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["scope", "window"]

    def __str__(self) -> str:
        target = self.client_app or self.profile or ""
        label = f"{self.get_scope_display()} {target}".strip()
        return f"{label}: {self.limit} {self.get_window_display()}"

    def clean(self) -> None:
        errors = {}
        if self.scope == self.Scope.CLIENT_APP and not self.client_app_id:
            errors["client_app"] = "Choose the client app this quota limits."
        if self.scope == self.Scope.PROFILE and not self.profile_id:
            errors["profile"] = "Choose the profile this quota limits."
        if self.scope == self.Scope.ORG and (self.client_app_id or self.profile_id):
            errors["scope"] = "An organisation-wide quota names no app or profile."
        if self.scope == self.Scope.CLIENT_APP and self.profile_id:
            errors["profile"] = "An app quota names no profile."
        if self.scope == self.Scope.PROFILE and self.client_app_id:
            errors["client_app"] = "A profile quota names no app."
        for field in ("client_app", "profile"):
            related = getattr(self, field) if getattr(self, f"{field}_id") else None
            if related is not None and related.organization_id != self.organization_id:
                errors[field] = "Belongs to another organisation."
        if errors:
            raise ValidationError(errors)
