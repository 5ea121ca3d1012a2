"""State of the database quota engine (the embedded default; Redis keeps the same in memory)."""

from django.db import models


class QuotaCounter(models.Model):
    """Issuances counted in one fixed window of one limit, e.g. ``q:7:42:1795305600``."""

    key = models.CharField(max_length=200, unique=True)
    count = models.IntegerField(default=0)
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.key}={self.count}"


class ActiveTokenSlot(models.Model):
    """One token that is (or may become) live, held against the org's active-token cap."""

    organization = models.ForeignKey(
        "tenants.Organization", on_delete=models.CASCADE, related_name="+"
    )
    grant_public_id = models.UUIDField(unique=True)
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["organization", "expires_at"])]

    def __str__(self) -> str:
        return f"slot {self.grant_public_id}"
