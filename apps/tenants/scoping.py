"""Tenancy guards shared by every app's services and admin."""

from django.db.models import Model

from apps.tenants.models import Organization


def ensure_in_organization(organization: Organization, *instances: Model | None) -> None:
    """Refuse rows of another organisation exactly as if they did not exist (a 404, not a 403)."""
    for instance in instances:
        if instance is not None and instance.organization_id != organization.pk:
            raise type(instance).DoesNotExist(
                f"No {instance._meta.verbose_name} with that id in this organisation."
            )
