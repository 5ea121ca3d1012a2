import json

import pydantic
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import JsonResponse
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from apps.issuance.quotas import quota_usage_text, quota_usage_texts
from apps.policies import services
from apps.policies.forms import LiveConstraintProfileForm, quota_formset_save
from apps.policies.guides import CLIENT_KEY_ENV, profile_guide
from apps.policies.live_schema import LOCK_WHOLE_SETUP
from apps.policies.models import LiveConstraintProfile, LiveConstraintProfileVersion, Quota
from apps.policies.selectors import profile_client_apps, profile_wire_preview
from apps.tenants.admin_scoping import TenantScopedAdmin, TenantScopedInline


class ProfileQuotaInline(TenantScopedInline):
    model = Quota
    fk_name = "profile"
    fields = ("scope", "client_app", "window", "limit", "usage")
    readonly_fields = ("usage",)
    verbose_name_plural = "quotas on this profile"

    @admin.display(description="used now")
    def usage(self, quota):
        return quota_usage_text(quota)


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
    """Profiles edited as form fields plus Advanced JSON, with the wire preview beside them.

    The preview on the page and the one ``preview_view`` answers while an admin types are
    both ``profile_wire_preview`` of the form's instance: the SDK's own request, the one
    issuance sends.
    """

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
    readonly_fields = ("version", "updated_at", "stored_config")
    inlines = [ProfileQuotaInline, VersionInline]
    change_form_template = "admin/policies/liveconstraintprofile/change_form.html"
    _first = (None, {"fields": ("organization", "name", "slug", "description", "is_active")})
    _limits = (
        "Token limits",
        {"fields": ("uses", "expire_seconds", "new_session_seconds", "members_may_use")},
    )
    _lock = (
        "Lock",
        {
            "fields": ("lock_mode", "lock_additional_fields"),
            "description": "What a client may still change when it opens its Live session.",
        },
    )
    fieldsets = (
        _first,
        ("Model and voice", {"fields": ("model", "response_modality", "voice", "language")}),
        (
            "Generation",
            {
                "fields": (
                    "system_instruction",
                    ("temperature", "top_p"),
                    ("top_k", "max_output_tokens"),
                ),
                "description": "Leave a field empty for the model's default.",
            },
        ),
        (
            "Session",
            {
                "fields": (
                    "session_resumption",
                    ("sliding_window", "trigger_tokens"),
                    "input_audio_transcription",
                    "output_audio_transcription",
                )
            },
        ),
        (
            "Advanced (JSON)",
            {
                "fields": ("config",),
                "description": "Settings without a field above, exactly as the google-genai "
                "SDK's LiveConnectConfig names them. After saving, a value a field above can "
                "show moves into that field.",
            },
        ),
        _lock,
        _limits,
    )
    # What auditors read: the stored config as one JSON document, next to the preview.
    view_only_fieldsets = (
        _first,
        ("Live setup", {"fields": ("model", "stored_config")}),
        _lock,
        _limits,
    )

    def get_fieldsets(self, request, obj=None):
        editable = (
            self.has_change_permission(request, obj) if obj else self.has_add_permission(request)
        )
        fieldsets = self.fieldsets if editable else self.view_only_fieldsets
        if request.tenant.organization is not None:
            first_name, first = fieldsets[0]
            fields = tuple(f for f in first["fields"] if f != "organization")
            fieldsets = ((first_name, {**first, "fields": fields}), *fieldsets[1:])
        if obj is not None:
            fieldsets = (*fieldsets, ("History", {"fields": ("version", "updated_at")}))
        return fieldsets

    @admin.display(description="config (LiveConnectConfig)")
    def stored_config(self, profile):
        return format_html(
            "<pre class='mono wire-json'>{}</pre>", json.dumps(profile.config or {}, indent=2)
        )

    def get_urls(self):
        return [
            path(
                "<path:object_id>/guide/",
                self.admin_site.admin_view(self.guide_view),
                name="policies_liveconstraintprofile_guide",
            ),
            path(
                "add/preview/",
                self.admin_site.admin_view(self.preview_view),
                name="policies_liveconstraintprofile_add_preview",
            ),
            path(
                "<path:object_id>/preview/",
                self.admin_site.admin_view(self.preview_view),
                name="policies_liveconstraintprofile_preview",
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

    # --- the wire preview ----------------------------------------------------------------

    def preview_view(self, request, object_id=None):
        """The preview for the form as it stands, before saving (POST), or as saved (GET).

        JSON for profile-preview.js: ``valid``, the form's ``errors``, the ``request`` body
        and the panel's ``html``. Writes nothing; only those who may save the form may ask.
        """
        obj = None
        if object_id is not None:
            obj = self.get_object(request, unquote(object_id))
            if obj is None:  # another organisation's profile looks exactly like none
                return JsonResponse({"error": "No such profile."}, status=404)
            allowed = self.has_change_permission(request, obj)
        else:
            allowed = self.has_add_permission(request)
        if not allowed:
            return JsonResponse({"error": "You may not edit profiles."}, status=403)
        if request.method not in ("GET", "POST"):
            return JsonResponse({"error": "GET or POST."}, status=405)
        form = None
        if request.method == "POST":
            form_class = self.get_form(request, obj, change=obj is not None)
            form = form_class(request.POST, instance=obj)
            form.is_valid()
        panel = self._preview_panel(request, form=form, obj=obj)
        html = render_to_string(PREVIEW_TEMPLATE, {"wire": panel}, request=request)
        return JsonResponse(
            {
                "valid": panel["state"] != "invalid",
                "errors": form.errors.get_json_data() if form is not None else {},
                "request": panel["request"],
                "html": html,
            }
        )

    def _preview_panel(self, request, *, form, obj) -> dict:
        """What the panel shows: the locked fields, the problems and the request body."""
        if form is not None and form.is_bound and not form.is_valid():
            return {
                "state": "invalid",
                "locked": "",
                "problems": _error_lines(form),
                "body": None,
                "request": None,
            }
        if form is not None and form.is_bound:
            profile, state = form.instance, "unsaved"
        elif obj is not None:
            profile, state = obj, "saved"
        else:
            profile = LiveConstraintProfile(
                organization=request.tenant.organization, model=settings.GEMINI_LIVE_MODELS[0]
            )
            state = "new"
        problems = _error_lines(form) if form is not None and form.errors else []
        try:
            preview = profile_wire_preview(profile=profile)
        except (pydantic.ValidationError, ValueError) as error:  # a row older than the SDK
            problems = [*problems, str(error)]
            return {
                "state": state,
                "locked": "",
                "problems": problems,
                "body": None,
                "request": None,
            }
        if preview.lock == LOCK_WHOLE_SETUP:
            locked = "The whole setup: the client's own setup is replaced. Fields set here: "
            locked += ", ".join(preview.set_fields)
        else:
            locked = ", ".join(preview.locked_fields) or "None: the client may set everything."
        return {
            "state": state,
            "locked": locked,
            "problems": problems or preview.warnings,
            "body": json.dumps(preview.body, indent=2) if preview.body is not None else "",
            "request": preview.body,
        }

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        form = context["adminform"].form
        context["wire"] = self._preview_panel(request, form=form, obj=obj)
        if add and self.has_add_permission(request):
            context["wire_preview_url"] = reverse(
                "admin:policies_liveconstraintprofile_add_preview"
            )
        elif obj is not None and self.has_change_permission(request, obj):
            context["wire_preview_url"] = reverse(
                "admin:policies_liveconstraintprofile_preview", args=[obj.pk]
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

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


PREVIEW_TEMPLATE = "admin/policies/liveconstraintprofile/wire_preview.html"


def _error_lines(form) -> list[str]:
    """A form's errors as one line each, led by the field's label."""
    lines = []
    for name, messages in form.errors.items():
        field = form.fields.get(name)
        label = (field.label or name.replace("_", " ").capitalize()) if field else None
        lines += [f"{label}: {message}" if label else message for message in messages]
    return lines


@admin.register(Quota)
class QuotaAdmin(TenantScopedAdmin):
    list_display = ("__str__", "scope", "window", "limit", "usage", "client_app", "profile")
    list_filter = ("scope", "window", "client_app", "profile")
    fields = ("organization", *services.QUOTA_FIELDS, "usage")
    readonly_fields = ("usage",)
    list_select_related = ("client_app", "profile")

    def get_changelist_instance(self, request):
        """The page's quotas are read from the quota engine at once, not one read per row."""
        changelist = super().get_changelist_instance(request)
        quotas = list(changelist.result_list)
        texts = quota_usage_texts(quotas)
        for quota in quotas:
            quota.usage_text = texts[quota.pk]
        return changelist

    @admin.display(description="used now")
    def usage(self, quota):
        return getattr(quota, "usage_text", None) or quota_usage_text(quota)

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
