from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from apps.clients import services, shown_once
from apps.clients.forms import ClientAppForm, KeyCreateForm, KeyRotateForm
from apps.clients.models import ClientApp, ClientKey
from apps.clients.selectors import (
    IssuedCounts,
    client_app_issued_counts,
    client_key_issued_counts,
    client_key_list,
)
from apps.issuance.quotas import quota_usage_text
from apps.policies.forms import quota_formset_save
from apps.policies.models import Quota
from apps.tenants.admin_scoping import (
    ReadOnlyTenantAdmin,
    TenantScopedAdmin,
    TenantScopedInline,
)


class IssuedCountColumns:
    """The "tokens today" and "tokens, 7 days" columns, read for a whole page at once.

    A subclass says how to count one organisation's rows (``issued_counts_of``) and which
    key of that answer is a row's (``issued_counts_key``); a page costs one read per
    organisation on it, not one per row.
    """

    def issued_counts_of(self, organization, rows) -> dict:
        raise NotImplementedError

    def issued_counts_key(self, row):
        raise NotImplementedError

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        self._attach_issued_counts(list(changelist.result_list))
        return changelist

    def _attach_issued_counts(self, rows) -> None:
        by_organization = {}
        for row in rows:
            if row.organization_id not in by_organization:
                by_organization[row.organization_id] = (row.organization, [])
            by_organization[row.organization_id][1].append(row)
        counts = {}
        for organization, its_rows in by_organization.values():
            counts.update(self.issued_counts_of(organization, its_rows))
        for row in rows:
            row.issued_counts = counts.get(self.issued_counts_key(row), IssuedCounts())

    def _issued_counts(self, row) -> IssuedCounts:
        if not hasattr(row, "issued_counts"):
            self._attach_issued_counts([row])
        return row.issued_counts

    @admin.display(description="tokens today")
    def issued_today(self, row):
        return self._issued_counts(row).today

    @admin.display(description="tokens, 7 days")
    def issued_week(self, row):
        return self._issued_counts(row).week


class AppQuotaInline(TenantScopedInline):
    model = Quota
    fk_name = "client_app"
    fields = ("scope", "profile", "window", "limit", "usage")
    readonly_fields = ("usage",)
    verbose_name_plural = "quotas on this app"

    @admin.display(description="used now")
    def usage(self, quota):
        return quota_usage_text(quota)


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "never"


@admin.register(ClientApp)
class ClientAppAdmin(IssuedCountColumns, TenantScopedAdmin):
    form = ClientAppForm
    list_display = (
        "name",
        "is_active",
        "profile_count",
        "live_keys",
        "issued_today",
        "issued_week",
        "last_used_at",
    )
    list_filter = ("is_active", "allowed_profiles")
    search_fields = ("name", "description")
    filter_horizontal = ("allowed_profiles",)
    readonly_fields = ("keys", "issued", "last_used_at", "created_at")
    inlines = [AppQuotaInline]
    change_form_template = "admin/clients/clientapp/change_form.html"

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        return fields if obj is not None else [f for f in fields if f not in ("keys", "issued")]

    def issued_counts_of(self, organization, apps) -> dict:
        return client_app_issued_counts(organization=organization, app_ids=[a.pk for a in apps])

    def issued_counts_key(self, app):
        return app.pk

    @admin.display(description="tokens issued")
    def issued(self, app):
        counts = self._issued_counts(app)
        return f"{counts.today} today, {counts.week} in the last 7 days (UTC days)"

    @admin.display(description="profiles")
    def profile_count(self, app):
        return app.allowed_profiles.count()

    @admin.display(description="working keys")
    def live_keys(self, app):
        return sum(1 for key in app.keys.all() if key.is_usable())

    @admin.display(description="keys")
    def keys(self, app):
        issued = client_key_issued_counts(organization=app.organization, app_ids=[app.pk])
        rows = [
            (
                key.prefix,
                key.label or "—",
                key.status(),
                _when(key.created_at),
                _when(key.expires_at) if key.expires_at else "—",
                _when(key.last_used_at),
                issued.get(key.prefix, IssuedCounts()).today,
                issued.get(key.prefix, IssuedCounts()).week,
                key.pk,
                key.get_scope_display().lower(),
            )
            for key in client_key_list(organization=app.organization, client_app=app)
        ]
        if not rows:
            return "No keys yet."
        body = format_html_join(
            "",
            "<tr data-key-id='{8}'><td data-label='key'><code>eph_{0}_…</code></td>"
            "<td class='key-label' data-label='label'>{1}</td>"
            "<td class='key-scope' data-label='may'>{9}</td>"
            "<td data-label='status'>{2}</td><td data-label='created'>{3}</td>"
            "<td data-label='stops at'>{4}</td>"
            "<td class='key-last-used' data-label='last used'>{5}</td>"
            "<td class='key-today' data-label='tokens today'>{6}</td>"
            "<td class='key-week' data-label='tokens, 7 days'>{7}</td></tr>",
            rows,
        )
        return format_html(
            "<div class='keys-scroll'><table class='keys'><thead><tr><th>key</th><th>label</th>"
            "<th>may</th><th>status</th><th>created</th><th>stops at</th><th>last used</th>"
            "<th>tokens today</th><th>tokens, 7 days</th></tr></thead>"
            "<tbody>{}</tbody></table></div>",
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
                "<path:object_id>/keys/<int:key_id>/created/",
                view(self.key_created_view),
                name="clients_clientapp_key_created",
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

    def _show_once(self, request, app, key, raw_key, rotated_from=""):
        """POST → redirect → GET: the key waits in the session for the page that shows it."""
        shown_once.hold(request.session, key.pk, raw_key, rotated_from)
        return HttpResponseRedirect(
            reverse("admin:clients_clientapp_key_created", args=[app.pk, key.pk])
        )

    def key_create_view(self, request, object_id):
        app, _ = self._app_and_key(request, object_id)
        form = KeyCreateForm(request.POST)
        if not form.is_valid():
            for errors in form.errors.values():
                self.message_user(request, f"No key was made: {' '.join(errors)}", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:clients_clientapp_change", args=[app.pk]))
        key, raw_key = services.client_key_create(
            organization=app.organization,
            client_app=app,
            actor=request.user,
            label=form.cleaned_data["label"],
            scope=form.cleaned_data["scope"],
        )
        return self._show_once(request, app, key, raw_key)

    def key_created_view(self, request, object_id, key_id):
        """The new key, the first time this page is opened; after that, only that it was."""
        app, key = self._app_and_key(request, object_id, key_id)
        showing = shown_once.take(request.session, key.pk)
        rotated = showing.rotated_from if showing else ""
        context = {
            **self.admin_site.each_context(request),
            "title": "Rotated client key" if rotated else "New client key",
            "app": app,
            "key": key,
            "raw_key": showing.raw_key if showing else None,
            "rotated_from": rotated,
            "opts": self.opts,
            "back_url": reverse("admin:clients_clientapp_change", args=[app.pk]),
        }
        response = TemplateResponse(request, "admin/clients/clientapp/key_created.html", context)
        response["Cache-Control"] = "no-store"
        return response

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
                    label=form.cleaned_data["label"].strip(),
                )
            except ValidationError as error:
                form.add_error(None, error)
            else:
                return self._show_once(request, app, new_key, raw_key, rotated_from=key.prefix)
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
class ClientKeyAdmin(IssuedCountColumns, ReadOnlyTenantAdmin):
    """Every key of every app, read-only; keys are made, rotated and revoked on the app page."""

    list_display = (
        "__str__",
        "client_app",
        "label",
        "scope",
        "key_status",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
        "issued_today",
        "issued_week",
    )
    list_filter = ("client_app", "scope")
    search_fields = ("prefix", "label", "client_app__name")
    fields = (
        "client_app",
        "prefix",
        "label",
        "scope",
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

    def issued_counts_of(self, organization, keys) -> dict:
        app_ids = {key.client_app_id for key in keys}
        return client_key_issued_counts(organization=organization, app_ids=app_ids)

    def issued_counts_key(self, key):
        return key.prefix

    def has_revoke_permission(self, request):
        return self._can(request, self.change_role)

    @admin.action(description="Revoke selected keys now", permissions=["revoke"])
    def revoke_keys(self, request, queryset):
        for key in queryset:
            services.client_key_revoke(organization=key.organization, key=key, actor=request.user)
        self.message_user(request, "The selected keys are revoked.", messages.WARNING)
