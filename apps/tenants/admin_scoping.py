"""One mixin scopes every tenant model admin to the active organisation (DESIGN.md §3).

Django's admin trusts that whoever reaches it may see every row: querysets, related-field
choices, list filters and autocomplete all use unscoped managers. Each of those doors is
closed here once, so a model admin only declares its roles and the services it writes with.
"""

from django.contrib import admin
from django.contrib.admin.utils import get_fields_from_path
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db.models import Model, QuerySet

from apps.tenants.models import Organization, Role, User


def is_tenant_owned(model: type[Model]) -> bool:
    try:
        field = model._meta.get_field("organization")
    except FieldDoesNotExist:
        return False
    return field.is_relation and field.related_model is Organization


def scope_to_organization(queryset: QuerySet, organization: Organization) -> QuerySet:
    """Restrict any queryset a form or filter may offer to what one organisation owns."""
    model = queryset.model
    if model is Organization:
        return queryset.filter(pk=organization.pk)
    if issubclass(model, User):
        return queryset.filter(memberships__organization=organization).distinct()
    if is_tenant_owned(model):
        return queryset.filter(organization=organization)
    return queryset


class TenantBoundFormMixin:
    """Binds a new row to the active organisation before validation, not after.

    The organisation is not a form field, so Django would skip every unique constraint that
    names it; validating them here turns a duplicate into a form error instead of a 500.
    """

    tenant_organization: Organization | None = None
    tenant_field = "organization"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.tenant_organization is not None and self.instance._state.adding:
            setattr(self.instance, self.tenant_field, self.tenant_organization)

    def validate_unique(self):
        exclude = set(self._get_validation_exclusions())
        if self.tenant_organization is not None:
            exclude.discard(self.tenant_field)
        try:
            self.instance.validate_unique(exclude=exclude)
            self.instance.validate_constraints(exclude=exclude)
        except ValidationError as error:
            self._update_errors(error)


class TenantScopedAdmin(admin.ModelAdmin):
    """Base for every admin of an organisation-owned model.

    Subclasses set ``view_role`` / ``change_role`` and implement ``service_save`` and
    ``service_delete`` so that writes go through the app's services.
    """

    tenant_field = "organization"
    view_role = Role.AUDITOR
    change_role = Role.ADMIN
    operator_only_fields: tuple[str, ...] = ()

    # --- permissions: from the member's role in the active organisation ----------------

    def _can(self, request, role: Role) -> bool:
        tenant = request.tenant
        return tenant.has_role(role) and (tenant.organization is not None or tenant.is_operator)

    def has_module_permission(self, request) -> bool:
        return self._can(request, self.view_role)

    def has_view_permission(self, request, obj=None) -> bool:
        return self._can(request, self.view_role)

    def has_add_permission(self, request) -> bool:
        return self._can(request, self.change_role)

    def has_change_permission(self, request, obj=None) -> bool:
        return self._can(request, self.change_role)

    def has_delete_permission(self, request, obj=None) -> bool:
        return self._can(request, self.change_role)

    # --- reads ------------------------------------------------------------------------

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        tenant = request.tenant
        if tenant.organization is not None:
            return queryset.filter(**{self.tenant_field: tenant.organization})
        if tenant.is_operator:
            return queryset
        return queryset.none()

    def get_list_display(self, request):
        columns = list(super().get_list_display(request))
        if request.tenant.organization is None and self.tenant_field not in columns:
            columns.append(self.tenant_field)  # the operator's cross-org view names the org
        return columns

    def get_list_filter(self, request):
        """Related filters list only values the scoped rows use (the stock one lists all)."""
        filters = []
        organization = request.tenant.organization
        for spec in super().get_list_filter(request):
            if isinstance(spec, str):
                if spec == self.tenant_field and organization is not None:
                    continue
                field = get_fields_from_path(self.model, spec)[-1]
                if field.is_relation:
                    spec = (spec, admin.RelatedOnlyFieldListFilter)
            filters.append(spec)
        if organization is None and self.tenant_field not in filters:
            filters.append((self.tenant_field, admin.RelatedOnlyFieldListFilter))
        return filters

    # --- forms ------------------------------------------------------------------------

    def get_exclude(self, request, obj=None):
        exclude = list(super().get_exclude(request, obj) or [])
        if request.tenant.organization is not None:
            exclude.append(self.tenant_field)
        return exclude

    def get_fields(self, request, obj=None):
        fields = list(super().get_fields(request, obj))
        if request.tenant.organization is not None and self.tenant_field in fields:
            fields.remove(self.tenant_field)
        return fields

    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is not None and request.tenant.organization is None:
            readonly.append(self.tenant_field)  # rows never move between organisations
        if not request.tenant.is_operator:
            readonly.extend(self.operator_only_fields)
        return readonly

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        return type(
            form.__name__,
            (TenantBoundFormMixin, form),
            {
                "tenant_organization": request.tenant.organization,
                "tenant_field": self.tenant_field,
            },
        )

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        organization = request.tenant.organization
        if organization is not None:
            base = kwargs.get("queryset", db_field.related_model._default_manager.all())
            kwargs["queryset"] = scope_to_organization(base, organization)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        organization = request.tenant.organization
        if organization is not None:
            base = kwargs.get("queryset", db_field.related_model._default_manager.all())
            kwargs["queryset"] = scope_to_organization(base, organization)
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    # --- writes: through the services -------------------------------------------------

    def organization_for(self, request, obj) -> Organization:
        return request.tenant.organization or getattr(obj, self.tenant_field)

    def save_model(self, request, obj, form, change):
        saved = self.service_save(request, obj, form, change)
        if saved is not obj:  # the admin goes on to log and redirect with ``obj``
            obj.pk = saved.pk
            obj.refresh_from_db()

    def delete_model(self, request, obj):
        self.service_delete(request, obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.service_delete(request, obj)

    def service_save(self, request, obj, form, change) -> Model:
        raise NotImplementedError(f"{type(self).__name__} must write through a service")

    def service_delete(self, request, obj) -> None:
        raise NotImplementedError(f"{type(self).__name__} must delete through a service")
