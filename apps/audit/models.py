"""The audit trail. Rows here are append-only: services write them, nobody edits them."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Func
from django.db.models.functions import Upper
from django.db.models.indexes import IndexExpression
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


class PatternOps(Func):
    """``expression text_pattern_ops`` on PostgreSQL, whose ``LIKE 'PREFIX%'`` uses only a
    pattern operator class (whatever the database's collation); elsewhere (SQLite, which has
    no operator classes) the expression alone.

    Like ``django.contrib.postgres``' ``OpClass`` (that app is not installed, and its
    ``OpClass`` would be a syntax error on SQLite), it must wrap the indexed expression
    rather than be parenthesised into it: registered below as an index-expression wrapper.
    """

    template = "%(expressions)s %(name)s"
    constraint_validation_compatible = False

    def __init__(self, expression, name):
        super().__init__(expression, name=name)

    def as_sql(self, compiler, connection, **extra_context):
        if connection.vendor != "postgresql":
            return compiler.compile(self.source_expressions[0])
        return super().as_sql(compiler, connection, **extra_context)


if PatternOps not in IndexExpression.wrapper_classes:
    *_outer, _innermost = IndexExpression.wrapper_classes  # (OrderBy, …, Collate)
    IndexExpression.register_wrappers(*_outer, PatternOps, _innermost)


# Issued and not yet expired: what the live-token index holds and the dashboard counts.
LIVE_LIFECYCLES = ("active", "session_window_closed")


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
    # No single-column indexes on the foreign keys: every composite below starts with the
    # organisation, and each index is one more write per row at every lifecycle step. The
    # price: deleting an app, a profile or an account sets its grants' link to NULL with one
    # scan of this table (a rare admin action; the seal does not cover those links).
    organization = models.ForeignKey(
        "tenants.Organization", on_delete=models.PROTECT, related_name="grants", db_index=False
    )
    client_app = models.ForeignKey(
        "clients.ClientApp",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    client_key_prefix = models.CharField(max_length=16, blank=True)
    member = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    end_user = models.CharField(max_length=200, blank=True)
    profile = models.ForeignKey(
        "policies.LiveConstraintProfile",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
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

    LIVE_LIFECYCLES = LIVE_LIFECYCLES

    # What the seal covers: everything decided at issuance. The lifecycle columns move later
    # (they follow from the sealed expire times); the reservation is bookkeeping; the app,
    # member and profile links are set to NULL when those rows are deleted, so the seal
    # holds what names them for good instead: the key prefix, the end user (``member:<id>``
    # for members) and the profile's slug and version.
    SEALED_FIELDS = (
        "id",
        "public_id",
        "organization_id",
        "client_key_prefix",
        "end_user",
        "profile_slug",
        "profile_version",
        "requested",
        "request_body",
        "outcome",
        "error_code",
        "detail",
        "requested_at",
        "issued_at",
        "expire_time",
        "new_session_expire_time",
        "uses",
        "upstream_latency_ms",
        "request_id",
        "ip",
        "user_agent",
        "token_fingerprint",
    )

    class Meta:
        ordering = ["-requested_at", "-id"]
        indexes = [
            # The auditor's changelist: newest first, per organisation, per filter.
            models.Index(fields=["organization", "-requested_at"]),
            models.Index(fields=["organization", "outcome", "-requested_at"]),
            models.Index(fields=["organization", "client_app", "-requested_at"]),
            models.Index(fields=["organization", "profile", "-requested_at"]),
            # The auditor's search (docs/adr/0018-grant-search-indexes.md): end user and key
            # prefix folded to upper case, request id as typed, each matched by prefix.
            models.Index(
                "organization",
                PatternOps(Upper("end_user"), name="text_pattern_ops"),
                name="grant_end_user_search_idx",
            ),
            models.Index(
                "organization",
                PatternOps(Upper("client_key_prefix"), name="text_pattern_ops"),
                name="grant_key_prefix_search_idx",
            ),
            models.Index(
                fields=["organization", "request_id"],
                opclasses=["int8_ops", "varchar_pattern_ops"],
                name="grant_request_id_search_idx",
            ),
            models.Index(fields=["organization", "token_fingerprint"]),
            # The lifecycle tasks: partial, so they only hold rows that still have to move.
            models.Index(
                fields=["new_session_expire_time"],
                name="grant_window_open_idx",
                condition=models.Q(lifecycle="active"),
            ),
            models.Index(
                fields=["expire_time"],
                name="grant_live_idx",
                condition=models.Q(lifecycle__in=LIVE_LIFECYCLES),
            ),
            models.Index(
                fields=["organization", "id"],
                name="grant_pending_idx",
                condition=models.Q(outcome="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"grant {self.public_id}"


class AuditSeal(models.Model):
    """One link of an organisation's hash chain over its grants and policy changes.

    ``hash = sha256(prev_hash ‖ grants_root ‖ changes_root)``, where each root hashes the
    ``[id, digest]`` entries of the records this seal covers, in id order. The entries are
    kept so verification can name the one record that no longer matches; when a purge
    removes a seal's grants it drops their entries but keeps ``grants_root``, so the chain
    still verifies from the oldest seal whose records are all kept.
    """

    organization = models.ForeignKey(
        "tenants.Organization", on_delete=models.PROTECT, related_name="audit_seals"
    )
    sequence = models.PositiveBigIntegerField()
    sealed_at = models.DateTimeField(default=timezone.now)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)
    grants_root = models.CharField(max_length=64)
    changes_root = models.CharField(max_length=64)
    grant_count = models.PositiveIntegerField(default=0)
    change_count = models.PositiveIntegerField(default=0)
    # The seal covers the organisation's grants with ``grants_after_id < id <=
    # grants_through_id`` (and likewise changes): consecutive seals' ranges meet, so a record
    # slipped in between two sealed ones is caught as well as one edited or deleted.
    grants_after_id = models.BigIntegerField(default=0)
    grants_through_id = models.BigIntegerField(default=0)
    changes_after_id = models.BigIntegerField(default=0)
    changes_through_id = models.BigIntegerField(default=0)
    grant_entries = models.JSONField(null=True, blank=True, editable=False)
    change_entries = models.JSONField(default=list, blank=True, editable=False)
    grants_purged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-sequence"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "sequence"], name="audit_seal_sequence_unique"
            )
        ]

    def __str__(self) -> str:
        return f"seal #{self.sequence}"


class CleanupRun(models.Model):
    """One run of a background task, as auditors see it.

    Each run writes a platform row (no organisation, the operator's view) with the totals,
    and one row per organisation it changed something in, with that organisation's counts:
    a tenant's auditors learn what happened to their records and nothing about anyone else's.
    """

    # The audit tasks (docs/architecture.md, "The audit trail"), in the order the dashboard
    # lists them. The first two are the issuance app's tasks, the rest this app's.
    TASKS = ("expire_grants", "reap_pending", "seal_audit", "rollup_usage", "purge_grants")

    task = models.CharField(max_length=40)
    organization = models.ForeignKey(
        "tenants.Organization",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="cleanup_runs",
    )
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    counts = models.JSONField(default=dict, blank=True)
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [
            models.Index(fields=["organization", "-started_at"]),
            models.Index(fields=["task", "-started_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.task} at {self.started_at:%Y-%m-%d %H:%M:%S}"

    @property
    def duration_ms(self) -> int | None:
        if self.finished_at is None:
            return None
        return int((self.finished_at - self.started_at).total_seconds() * 1000)


class UsageDaily(models.Model):
    """Grants per organisation, UTC day, app, profile and outcome: what the dashboard reads."""

    organization = models.ForeignKey(
        "tenants.Organization", on_delete=models.CASCADE, related_name="+"
    )
    day = models.DateField()
    client_app = models.ForeignKey(
        "clients.ClientApp", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    profile = models.ForeignKey(
        "policies.LiveConstraintProfile",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    outcome = models.CharField(max_length=16, choices=TokenGrant.Outcome.choices)
    count = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name_plural = "usage (daily)"
        indexes = [models.Index(fields=["organization", "day"])]

    def __str__(self) -> str:
        return f"{self.day} {self.outcome} ×{self.count}"


class UsageRollupCursor(models.Model):
    """How far ``rollup_usage`` has counted an organisation's grants (by id)."""

    organization = models.OneToOneField(
        "tenants.Organization", on_delete=models.CASCADE, related_name="+"
    )
    last_grant_id = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"usage counted through grant {self.last_grant_id}"
