"""Tenancy guards shared by every app's services and admin (docs/architecture.md, "Tenancy").

Scoping fails closed: a model is scoped through its ``organization`` foreign key, or through
the ``organization_path`` it declares (``organization_path = "client_app__organization"``
for a model owned through its client app); any other model is refused, never returned
unfiltered.
"""

from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db.models import Model, QuerySet
from django.db.models.constants import LOOKUP_SEP

from apps.tenants.models import Organization


class NoOrganizationPath(ImproperlyConfigured):
    """A model was scoped whose way to its organisation nobody declared."""


def is_tenant_owned(model: type[Model]) -> bool:
    """Owned directly: an ``organization`` foreign key (or one-to-one) to Organization."""
    try:
        field = model._meta.get_field("organization")
    except FieldDoesNotExist:
        return False
    return field.is_relation and field.related_model is Organization


def organization_path(model: type[Model]) -> str:
    """The lookup from ``model`` to the Organization that owns its rows.

    The model's own declaration wins, then its ``organization`` foreign key; anything else
    raises ``NoOrganizationPath``, so a new model is never handed back unscoped.
    """
    declared = getattr(model, "organization_path", None)
    if declared is None:
        if is_tenant_owned(model):
            return "organization"
        raise NoOrganizationPath(
            f"{model._meta.label} has no known path to its organisation, so it cannot be "
            "scoped: give it an `organization` foreign key, or declare the relation that "
            'leads to one on the model, e.g. `organization_path = "client_app__organization"` '
            '(docs/architecture.md, "Tenancy").'
        )
    if _path_leads_to(model, declared) is not Organization:
        raise NoOrganizationPath(
            f"{model._meta.label}.organization_path {declared!r} does not lead to "
            "tenants.Organization: name a chain of relations that ends at one."
        )
    return declared


def scope_to_organization(queryset: QuerySet, organization: Organization) -> QuerySet:
    """Restrict any queryset a form or filter may offer to what one organisation owns.

    Raises ``NoOrganizationPath`` for a model with no known path: a form that would have
    offered every organisation's rows fails loudly instead.
    """
    model = queryset.model
    if issubclass(model, Organization):
        return queryset.filter(pk=organization.pk)
    path = organization_path(model)
    scoped = queryset.filter(**{path: organization})
    if _crosses_to_many(model, path):  # a row reached through several related rows, once
        scoped = scoped.distinct()
    return scoped


def ensure_in_organization(organization: Organization, *instances: Model | None) -> None:
    """Refuse rows of another organisation exactly as if they did not exist (a 404, not a 403)."""
    for instance in instances:
        if instance is not None and instance.organization_id != organization.pk:
            raise type(instance).DoesNotExist(
                f"No {instance._meta.verbose_name} with that id in this organisation."
            )


def _relations(model: type[Model], path: str):
    for name in path.split(LOOKUP_SEP):
        field = model._meta.get_field(name)
        if not field.is_relation:
            raise FieldDoesNotExist(f"{model._meta.label}.{name} is not a relation")
        yield field
        model = field.related_model


def _path_leads_to(model: type[Model], path: str) -> type[Model] | None:
    try:
        fields = list(_relations(model, path))
    except FieldDoesNotExist:
        return None
    return fields[-1].related_model


def _crosses_to_many(model: type[Model], path: str) -> bool:
    return any(field.one_to_many or field.many_to_many for field in _relations(model, path))
