"""The audit trail. Rows here are append-only: services write them, nobody edits them."""

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class PolicyChange(models.Model):
    """One create, update or delete of anything that decides who may get which token."""

    class Action(models.TextChoices):
        CREATE = "create", "Created"
        UPDATE = "update", "Updated"
        DELETE = "delete", "Deleted"

    organization = models.ForeignKey(
        "tenants.Organization", on_delete=models.PROTECT, related_name="policy_changes"
    )
    occurred_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    # Kept as text so the record still names the actor after the account is deleted.
    actor_label = models.CharField(max_length=254, blank=True)
    action = models.CharField(max_length=8, choices=Action.choices)
    object_type = models.CharField(max_length=100)
    object_id = models.CharField(max_length=64)
    object_repr = models.CharField(max_length=200)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [
            models.Index(fields=["organization", "-occurred_at"]),
            models.Index(fields=["organization", "object_type", "object_id"]),
        ]

    def __str__(self) -> str:
        return f"{self.get_action_display()} {self.object_type} {self.object_repr}"

    @property
    def changed_fields(self) -> list[str]:
        before, after = self.before or {}, self.after or {}
        return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


class TokenGrant(models.Model):
    """One attempt to get a token, from the moment it is asked for until the token is dead.

    The row is committed as PENDING before Google is called, so no token ever exists without
    it. The token itself is never stored: only an HMAC fingerprint an auditor can match.
    """

    class Outcome(models.TextChoices):
        PENDING = "pending", "Pending"
        ISSUED = "issued", "Issued"
        DENIED_QUOTA = "denied_quota", "Denied: quota"
        DENIED_POLICY = "denied_policy", "Denied: policy"
        UPSTREAM_ERROR = "upstream_error", "Upstream error"
        ABANDONED = "abandoned", "Abandoned"

    class Lifecycle(models.TextChoices):
        ACTIVE = "active", "Active"
        SESSION_WINDOW_CLOSED = "session_window_closed", "New-session window closed"
        EXPIRED = "expired", "Expired"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    organization = models.ForeignKey(
        "tenants.Organization", on_delete=models.PROTECT, related_name="grants"
    )
    client_app = models.ForeignKey(
        "clients.ClientApp", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    client_key_prefix = models.CharField(max_length=16, blank=True)
    member = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    end_user = models.CharField(max_length=200, blank=True)
    profile = models.ForeignKey(
        "policies.LiveConstraintProfile",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    profile_slug = models.CharField(max_length=64, blank=True)
    profile_version = models.PositiveIntegerField(null=True, blank=True)
    requested = models.JSONField(default=dict, blank=True, help_text="The overrides asked for.")
    request_body = models.JSONField(null=True, blank=True, help_text="Exactly what Google got.")

    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.PENDING)
    error_code = models.CharField(max_length=40, blank=True)
    detail = models.CharField(max_length=500, blank=True)

    requested_at = models.DateTimeField(default=timezone.now)
    issued_at = models.DateTimeField(null=True, blank=True)
    expire_time = models.DateTimeField(null=True, blank=True)
    new_session_expire_time = models.DateTimeField(null=True, blank=True)
    uses = models.PositiveIntegerField(null=True, blank=True)
    upstream_latency_ms = models.PositiveIntegerField(null=True, blank=True)

    lifecycle = models.CharField(max_length=24, choices=Lifecycle.choices, blank=True)
    session_window_closed_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)

    request_id = models.CharField(max_length=64, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    token_fingerprint = models.CharField(max_length=64, blank=True)
    quota_reservation = models.JSONField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-requested_at", "-id"]
        indexes = [
            models.Index(fields=["organization", "-requested_at"]),
            models.Index(fields=["organization", "outcome", "-requested_at"]),
            models.Index(fields=["lifecycle", "expire_time"]),
            models.Index(fields=["token_fingerprint"]),
        ]

    def __str__(self) -> str:
        return f"grant {self.public_id}"
