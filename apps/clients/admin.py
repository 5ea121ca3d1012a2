from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from apps.clients import services
from apps.clients.forms import ClientAppForm, KeyCreateForm, KeyRotateForm
from apps.clients.models import ClientApp, ClientKey
from apps.clients.selectors import client_key_list
from apps.policies.forms import quota_formset_save
from apps.policies.models import Quota
from apps.tenants.admin_scoping import (
    ReadOnlyTenantAdmin,
    TenantScopedAdmin,
    TenantScopedInline,
)


class AppQuotaInline(TenantScopedInline):
    model = Quota
    fk_name = "client_app"
    fields = ("scope", "profile", "window", "limit")
    verbose_name_plural = "quotas on this app"


@admin.register(ClientApp)
class ClientAppAdmin(TenantScopedAdmin):
    form = ClientAppForm
    list_display = ("name", "is_active", "profile_count", "live_keys", "last_used_at")
    list_filter = ("is_active", "allowed_profiles")
    search_fields = ("name", "description")
    filter_horizontal = ("allowed_profiles",)
    readonly_fields = ("keys", "last_used_at", "created_at")
    inlines = [AppQuotaInline]
    change_form_template = "admin/clients/clientapp/change_form.html"

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        return fields if obj is not None else [f for f in fields if f != "keys"]

    @admin.display(description="profiles")
    def profile_count(self, app):
        return app.allowed_profiles.count()

    @admin.display(description="working keys")
    def live_keys(self, app):
        return sum(1 for key in app.keys.all() if key.is_usable())

    @admin.display(description="keys")
    def keys(self, app):
        rows = [
            (
                key.prefix,
                key.label,
                key.status(),
                key.created_at.strftime("%Y-%m-%d %H:%M"),
                key.expires_at.strftime("%Y-%m-%d %H:%M") if key.expires_at else "—",
                key.last_used_at.strftime("%Y-%m-%d %H:%M") if key.last_used_at else "never",
                key.pk,
            )
            for key in client_key_list(organization=app.organization, client_app=app)
        ]
        if not rows:
            return "No keys yet."
        body = format_html_join(
            "",
            "<tr data-key-id='{6}'><td><code>eph_{0}_…</code></td><td>{1}</td><td>{2}</td>"
            "<td>{3}</td><td>{4}</td><td>{5}</td></tr>",
            rows,
        )
        return format_html(
            "<table class='keys'><thead><tr><th>key</th><th>label</th><th>status</th>"
            "<th>created</th><th>stops at</th><th>last used</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            body,
        )

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/keys/new/",
                view(require_POST(self.key_create_view)),
                name="clients_clientapp_key_create",
            ),
            path(
                "<path:object_id>/keys/<int:key_id>/rotate/",
                view(self.key_rotate_view),
                name="clients_clientapp_key_rotate",
            ),
            path(
                "<path:object_id>/keys/<int:key_id>/revoke/",
                view(require_POST(self.key_revoke_view)),
                name="clients_clientapp_key_revoke",
            ),
            *super().get_urls(),
        ]

    def _app_and_key(self, request, object_id, key_id=None):
        """The app (and key) inside the active organisation; anything else is a 404."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        app = self.get_object(request, object_id)
        if app is None:
            raise Http404("No such client app.")
        if key_id is None:
            return app, None
        key = (
            client_key_list(organization=app.organization, client_app=app).filter(pk=key_id).first()
        )
        if key is None:
            raise Http404("No such key.")
        return app, key

    def _shown_once(self, request, app, key, raw_key, headline):
        context = {
            **self.admin_site.each_context(request),
            "title": headline,
            "app": app,
            "key": key,
            "raw_key": raw_key,
            "opts": self.opts,
            "back_url": reverse("admin:clients_clientapp_change", args=[app.pk]),
        }
        response = TemplateResponse(request, "admin/clients/clientapp/key_created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    def key_create_view(self, request, object_id):
        app, _ = self._app_and_key(request, object_id)
        form = KeyCreateForm(request.POST)
        label = form.cleaned_data["label"] if form.is_valid() else ""
        key, raw_key = services.client_key_create(
            organization=app.organization, client_app=app, actor=request.user, label=label
        )
        return self._shown_once(request, app, key, raw_key, "New client key")

    def key_rotate_view(self, request, object_id, key_id):
        app, key = self._app_and_key(request, object_id, key_id)
        form = KeyRotateForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                new_key, raw_key = services.client_key_rotate(
                    organization=app.organization,
                    key=key,
                    actor=request.user,
                    grace_until=form.grace_until(),
                )
            except ValidationError as error:
                form.add_error(None, error)
            else:
                return self._shown_once(request, app, new_key, raw_key, "Rotated client key")
        context = {
            **self.admin_site.each_context(request),
            "title": f"Rotate key eph_{key.prefix}_…",
            "app": app,
            "key": key,
            "form": form,
            "opts": self.opts,
        }
        return TemplateResponse(request, "admin/clients/clientapp/key_rotate.html", context)

    def key_revoke_view(self, request, object_id, key_id):
        app, key = self._app_and_key(request, object_id, key_id)
        services.client_key_revoke(organization=app.organization, key=key, actor=request.user)
        self.message_user(
            request, f"Key eph_{key.prefix}_… is revoked and stops working now.", messages.WARNING
        )
        return HttpResponseRedirect(reverse("admin:clients_clientapp_change", args=[app.pk]))

    def service_save(self, request, obj, form, change):
        organization = self.organization_for(request, obj)
        fields = {
            name: form.cleaned_data[name]
            for name in ("name", "description", "allowed_origins", "is_active")
            if name in form.cleaned_data
        }
        profiles = form.cleaned_data.get("allowed_profiles", [])
        if change:
            return services.client_app_update(
                organization=organization,
                client_app=obj,
                actor=request.user,
                allowed_profiles=profiles,
                **fields,
            )
        return services.client_app_create(
            organization=organization, actor=request.user, allowed_profiles=profiles, **fields
        )

    def save_related(self, request, form, formsets, change):
        """Allowed profiles were set by the service; only the quota inline is left."""
        for formset in formsets:
            self.save_formset(request, form, formset, change)

    def save_formset(self, request, form, formset, change):
        if formset.model is Quota:
            quota_formset_save(formset, organization=form.instance.organization, actor=request.user)

    def service_delete(self, request, obj):
        services.client_app_delete(
            organization=obj.organization, client_app=obj, actor=request.user
        )


@admin.register(ClientKey)
class ClientKeyAdmin(ReadOnlyTenantAdmin):
    """Every key of every app, read-only; keys are made, rotated and revoked on the app page."""

    list_display = (
        "__str__",
        "client_app",
        "label",
        "key_status",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
    )
    list_filter = ("client_app",)
    search_fields = ("prefix", "label", "client_app__name")
    fields = (
        "client_app",
        "prefix",
        "label",
        "created_at",
        "created_by",
        "expires_at",
        "revoked_at",
        "last_used_at",
    )
    readonly_fields = fields
    list_select_related = ("client_app",)
    actions = ["revoke_keys"]

    @admin.display(description="status")
    def key_status(self, key):
        return key.status()

    def has_revoke_permission(self, request):
        return self._can(request, self.change_role)

    @admin.action(description="Revoke selected keys now", permissions=["revoke"])
    def revoke_keys(self, request, queryset):
        for key in queryset:
            services.client_key_revoke(organization=key.organization, key=key, actor=request.user)
        self.message_user(request, "The selected keys are revoked.", messages.WARNING)
