"""Inlines for tenant-owned rows shown on a parent's page, scoped like TenantScopedAdmin."""

from django.contrib import admin
from django.forms.models import BaseInlineFormSet

from apps.tenants.admin_scoping import scope_to_organization
from apps.tenants.models import Role


class TenantInlineFormSet(BaseInlineFormSet):
    """Give each inline row the parent's organisation before it validates."""

    def _construct_form(self, i, **kwargs):
        form = super()._construct_form(i, **kwargs)
        if form.instance.organization_id is None:
            form.instance.organization_id = self.instance.organization_id
        return form


class TenantScopedInline(admin.TabularInline):
    """Related choices come from the active organisation; rights follow the member's role.

    The parent admin's ``save_formset`` writes the rows through services.
    """

    formset = TenantInlineFormSet
    view_role = Role.AUDITOR
    change_role = Role.ADMIN
    extra = 0

    def _can(self, request, role: Role) -> bool:
        return request.tenant.has_role(role)

    def has_view_permission(self, request, obj=None) -> bool:
        return self._can(request, self.view_role)

    def has_add_permission(self, request, obj=None) -> bool:
        return self._can(request, self.change_role)

    def has_change_permission(self, request, obj=None) -> bool:
        return self._can(request, self.change_role)

    def has_delete_permission(self, request, obj=None) -> bool:
        return self._can(request, self.change_role)

    def get_exclude(self, request, obj=None):
        return [*(super().get_exclude(request, obj) or []), "organization"]

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        organization = request.tenant.organization
        if organization is not None:
            base = kwargs.get("queryset", db_field.related_model._default_manager.all())
            kwargs["queryset"] = scope_to_organization(base, organization)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)
