import json

from django.contrib import admin
from django.utils.html import format_html

from apps.audit.models import PolicyChange
from apps.tenants.admin_scoping import TenantScopedAdmin


@admin.register(PolicyChange)
class PolicyChangeAdmin(TenantScopedAdmin):
    """The change history auditors read. Nobody, the operator included, can alter it here."""

    list_display = (
        "occurred_at",
        "actor_label",
        "action",
        "object_type",
        "object_repr",
        "fields_changed",
    )
    list_filter = ("action", "object_type")
    search_fields = ("object_repr", "object_id", "actor_label")
    date_hierarchy = "occurred_at"
    fields = (
        "occurred_at",
        "actor_label",
        "action",
        "object_type",
        "object_id",
        "object_repr",
        "before_json",
        "after_json",
    )
    readonly_fields = fields
    list_select_related = ("organization",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="fields changed")
    def fields_changed(self, change):
        return ", ".join(change.changed_fields)

    @admin.display(description="before")
    def before_json(self, change):
        return format_html("<pre class='mono'>{}</pre>", json.dumps(change.before, indent=2))

    @admin.display(description="after")
    def after_json(self, change):
        return format_html("<pre class='mono'>{}</pre>", json.dumps(change.after, indent=2))
