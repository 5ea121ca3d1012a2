import json

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.html import format_html, format_html_join

from apps.policies import services
from apps.policies.forms import LiveConstraintProfileForm, quota_formset_save
from apps.policies.guides import CLIENT_KEY_ENV, profile_guide
from apps.policies.models import LiveConstraintProfile, LiveConstraintProfileVersion, Quota
from apps.policies.selectors import profile_client_apps, profile_wire_preview
from apps.tenants.admin_scoping import TenantScopedAdmin, TenantScopedInline


class ProfileQuotaInline(TenantScopedInline):
    model = Quota
    fk_name = "profile"
    fields = ("scope", "client_app", "window", "limit")
    verbose_name_plural = "quotas on this profile"


class VersionInline(admin.TabularInline):
    """Earlier versions, read-only: what a grant issued under version N was allowed to do."""

    model = LiveConstraintProfileVersion
    fields = ("version", "created_at", "created_by", "settings")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "versions"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_view_permission(self, request, obj=None):
        return True  # shown only on a profile page the user may already view

    @admin.display(description="settings")
    def settings(self, version):
        return format_html("<pre class='mono'>{}</pre>", json.dumps(version.snapshot, indent=2))


@admin.register(LiveConstraintProfile)
class LiveConstraintProfileAdmin(TenantScopedAdmin):
    form = LiveConstraintProfileForm
    list_display = (
        "name",
        "slug",
        "model",
        "lock_mode",
        "uses",
        "expire_seconds",
        "is_active",
        "version",
    )
    list_filter = ("is_active", "lock_mode", "model", "members_may_use")
    search_fields = ("name", "slug", "description")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("version", "locked_fields", "preview_warnings", "wire_body", "updated_at")
    inlines = [ProfileQuotaInline, VersionInline]
    change_form_template = "admin/policies/liveconstraintprofile/change_form.html"
    fieldsets = (
        (None, {"fields": ("organization", "name", "slug", "description", "is_active")}),
        ("Live setup", {"fields": ("model", "config", "lock_mode", "lock_additional_fields")}),
        (
            "Token limits",
            {"fields": ("uses", "expire_seconds", "new_session_seconds", "members_may_use")},
        ),
        (
            "What Google will receive",
            {
                "fields": ("locked_fields", "preview_warnings", "wire_body"),
                "description": "Built by the google-genai SDK itself for a token minted now.",
            },
        ),
        ("History", {"fields": ("version", "updated_at")}),
    )

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if request.tenant.organization is not None:
            first_name, first = fieldsets[0]
            fields = tuple(f for f in first["fields"] if f != "organization")
            fieldsets = ((first_name, {**first, "fields": fields}), *fieldsets[1:])
        if obj is None:  # nothing to preview before the first save
            fieldsets = tuple(
                fs for fs in fieldsets if fs[0] not in ("What Google will receive", "History")
            )
        return fieldsets

    def get_urls(self):
        return [
            path(
                "<path:object_id>/guide/",
                self.admin_site.admin_view(self.guide_view),
                name="policies_liveconstraintprofile_guide",
            ),
            *super().get_urls(),
        ]

    def guide_view(self, request, object_id):
        """Copy-paste snippets for the org's developers: their backend, then the browser."""
        profile = self.get_object(request, unquote(object_id))
        if profile is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_or_change_permission(request, profile):
            raise PermissionDenied
        guide = profile_guide(profile=profile, portal_url=request.build_absolute_uri("/"))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Client guide: {profile}",
            "subtitle": None,
            "opts": self.opts,
            "original": profile,
            "guide": guide,
            "client_apps": profile_client_apps(profile=profile),
            "client_key_env": CLIENT_KEY_ENV,
        }
        return TemplateResponse(request, "admin/policies/liveconstraintprofile/guide.html", context)

    def _preview(self, profile):
        if not hasattr(profile, "_wire_preview"):
            profile._wire_preview = profile_wire_preview(profile=profile)
        return profile._wire_preview

    @admin.display(description="effective locked fields")
    def locked_fields(self, profile):
        preview = self._preview(profile)
        if preview.whole_setup_locked:
            lead = "The whole setup: the client's own setup is replaced. Fields set here: "
            return lead + ", ".join(preview.locked_fields)
        return ", ".join(preview.locked_fields) or "None: the client may set everything."

    @admin.display(description="warnings")
    def preview_warnings(self, profile):
        warnings = self._preview(profile).warnings
        if not warnings:
            return "None"
        return format_html_join("", "<p class='errornote'>{}</p>", ((w,) for w in warnings))

    @admin.display(description="request body (POST /v1alpha/auth_tokens)")
    def wire_body(self, profile):
        body = self._preview(profile).body
        text = json.dumps(body, indent=2) if body is not None else "(no body)"
        return format_html("<pre class='mono' id='wire-preview'>{}</pre>", text)

    def service_save(self, request, obj, form, change):
        organization = self.organization_for(request, obj)
        fields = {
            name: form.cleaned_data[name]
            for name in services.PROFILE_EDITABLE_FIELDS
            if name in form.cleaned_data
        }
        if change:
            return services.profile_update(
                organization=organization, profile=obj, actor=request.user, **fields
            )
        return services.profile_create(organization=organization, actor=request.user, **fields)

    def service_delete(self, request, obj):
        services.profile_delete(organization=obj.organization, profile=obj, actor=request.user)

    def save_formset(self, request, form, formset, change):
        if formset.model is Quota:
            quota_formset_save(formset, organization=form.instance.organization, actor=request.user)
        else:
            formset.save()


@admin.register(Quota)
class QuotaAdmin(TenantScopedAdmin):
    list_display = ("__str__", "scope", "window", "limit", "client_app", "profile")
    list_filter = ("scope", "window", "client_app", "profile")
    fields = ("organization", *services.QUOTA_FIELDS)
    list_select_related = ("client_app", "profile")

    def service_save(self, request, obj, form, change):
        organization = self.organization_for(request, obj)
        fields = {name: form.cleaned_data.get(name) for name in services.QUOTA_FIELDS}
        if change:
            return services.quota_update(
                organization=organization, quota=obj, actor=request.user, **fields
            )
        return services.quota_create(organization=organization, actor=request.user, **fields)

    def service_delete(self, request, obj):
        services.quota_delete(organization=obj.organization, quota=obj, actor=request.user)
