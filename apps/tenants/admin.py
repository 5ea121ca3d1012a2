from django import forms
from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.admin.utils import quote, unquote
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.core.exceptions import ValidationError
from django.http import HttpResponseRedirect
from django.urls import reverse

from apps.tenants import services
from apps.tenants.admin_scoping import TenantScopedAdmin
from apps.tenants.models import (
    Domain,
    GeminiCredential,
    Invitation,
    Membership,
    Organization,
    Role,
    User,
)
from apps.tenants.selectors import membership_is_last_owner

LAST_OWNER = "An organisation must keep at least one owner."


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    """Accounts across all organisations: the operator's alone (stock model permissions)."""


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 0
    fields = ("name", "is_verified", "verified_at")
    readonly_fields = ("verified_at",)


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    """The operator creates and configures organisations; members see only their own."""

    list_display = ("name", "slug", "is_active", "created_at")
    list_filter = ("is_active",)
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("created_at",)

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.tenant.organization is not None:
            return queryset.filter(pk=request.tenant.organization.pk)
        return queryset if request.tenant.is_operator else queryset.none()

    def get_inlines(self, request, obj):
        return [DomainInline] if request.tenant.is_operator else []

    def has_module_permission(self, request):
        return request.tenant.has_role(Role.AUDITOR)

    def has_view_permission(self, request, obj=None):
        return request.tenant.has_role(Role.AUDITOR)

    def has_add_permission(self, request):
        return request.tenant.is_operator

    def has_change_permission(self, request, obj=None):
        return request.tenant.is_operator

    def has_delete_permission(self, request, obj=None):
        return request.tenant.is_operator

    def save_model(self, request, obj, form, change):
        if change:
            services.organization_update(organization=obj, actor=request.user, **form.cleaned_data)
        else:
            rest = {k: v for k, v in form.cleaned_data.items() if k not in ("name", "slug")}
            created = services.organization_create(
                name=obj.name, slug=obj.slug, actor=request.user, **rest
            )
            obj.pk = created.pk
            obj.refresh_from_db()

    def save_formset(self, request, form, formset, change):
        """Domain claims made on the organisation page go through the domain services."""
        organization = form.instance
        changed = formset.save(commit=False)  # this is what fills formset.deleted_objects
        for domain in formset.deleted_objects:
            services.domain_delete(organization=organization, domain=domain, actor=request.user)
        for domain in changed:
            if domain.pk is None:
                services.domain_create(
                    organization=organization,
                    name=domain.name,
                    is_verified=domain.is_verified,
                    actor=request.user,
                )
            else:
                services.domain_update(
                    organization=organization,
                    domain=domain,
                    name=domain.name,
                    is_verified=domain.is_verified,
                    actor=request.user,
                )


@admin.register(Membership)
class MembershipAdmin(TenantScopedAdmin):
    """Owners change roles and remove members; people join through Google sign-in."""

    change_role = Role.OWNER
    list_display = ("user_email", "role", "created_at")
    list_filter = ("role",)
    search_fields = ("user__email", "user__first_name", "user__last_name")
    fields = ("organization", "user", "role", "created_at")
    readonly_fields = ("created_at",)
    list_select_related = ("user",)
    actions = ["delete_selected"]  # replaces the site-wide one: see below

    @admin.display(description="e-mail", ordering="user__email")
    def user_email(self, membership):
        return membership.user.email or membership.user.username

    def has_add_permission(self, request):
        return request.tenant.is_operator  # others join by invitation or verified domain

    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        return [*readonly, "user"] if obj is not None else readonly

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)

        class MembershipForm(form):
            def clean_role(self):
                role = self.cleaned_data["role"]
                if (
                    self.instance.pk
                    and role != Role.OWNER
                    and membership_is_last_owner(membership=self.instance)
                ):
                    raise ValidationError(LAST_OWNER)
                return role

        return MembershipForm

    def service_save(self, request, obj, form, change):
        organization = self.organization_for(request, obj)
        if change:
            return services.membership_update_role(
                organization=organization, membership=obj, role=Role(obj.role), actor=request.user
            )
        return services.membership_create(
            organization=organization, user=obj.user, role=Role(obj.role), actor=request.user
        )

    # Django logs a deletion and announces it as done before ``delete_model`` runs, so a
    # refusal by the service would be followed by "deleted successfully": refuse up front.

    def delete_view(self, request, object_id, extra_context=None):
        if request.method == "POST":
            obj = self.get_object(request, unquote(object_id))
            if (
                obj is not None
                and self.has_delete_permission(request, obj)
                and membership_is_last_owner(membership=obj)
            ):
                self.message_user(request, f"{obj}: {LAST_OWNER}", messages.ERROR)
                opts = self.opts
                change_url = f"admin:{opts.app_label}_{opts.model_name}_change"
                return HttpResponseRedirect(reverse(change_url, args=[quote(obj.pk)]))
        return super().delete_view(request, object_id, extra_context)

    @admin.action(permissions=["delete"], description=django_delete_selected.short_description)
    def delete_selected(self, request, queryset):
        for organization_id in queryset.filter(role=Role.OWNER).values_list(
            "organization_id", flat=True
        ):
            owners = Membership.objects.filter(organization_id=organization_id, role=Role.OWNER)
            if not owners.exclude(pk__in=queryset.values("pk")).exists():
                self.message_user(request, LAST_OWNER, messages.ERROR)
                return None
        return django_delete_selected(self, request, queryset)

    def service_delete(self, request, obj):
        try:
            services.membership_delete(
                organization=obj.organization, membership=obj, actor=request.user
            )
        except ValidationError as error:
            self.message_user(request, f"{obj}: {error.messages[0]}", messages.ERROR)


@admin.register(Domain)
class DomainAdmin(TenantScopedAdmin):
    """Members see their organisation's domains; only the operator claims and verifies them."""

    list_display = ("name", "is_verified", "verified_at", "created_at")
    list_filter = ("is_verified",)
    search_fields = ("name",)
    readonly_fields = ("verified_at", "created_at")
    actions = ["verify_domains"]

    def has_add_permission(self, request):
        return request.tenant.is_operator

    def has_change_permission(self, request, obj=None):
        return request.tenant.is_operator

    def has_delete_permission(self, request, obj=None):
        return request.tenant.is_operator

    def has_verify_permission(self, request):
        return request.tenant.is_operator

    @admin.action(description="Verify selected domains", permissions=["verify"])
    def verify_domains(self, request, queryset):
        for domain in queryset.select_related("organization"):
            services.domain_verify(
                organization=domain.organization, domain=domain, actor=request.user
            )
        self.message_user(request, f"Verified {queryset.count()} domain(s).")

    def service_save(self, request, obj, form, change):
        organization = self.organization_for(request, obj)
        if change:
            return services.domain_update(
                organization=organization,
                domain=obj,
                name=obj.name,
                is_verified=obj.is_verified,
                actor=request.user,
            )
        return services.domain_create(
            organization=organization,
            name=obj.name,
            is_verified=obj.is_verified,
            actor=request.user,
        )

    def service_delete(self, request, obj):
        services.domain_delete(organization=obj.organization, domain=obj, actor=request.user)


@admin.register(Invitation)
class InvitationAdmin(TenantScopedAdmin):
    """Owners invite exact addresses; an invitation is never edited, only revoked."""

    change_role = Role.OWNER
    list_display = ("email", "role", "status", "expires_at", "invited_by", "accepted_at")
    list_filter = ("role",)
    search_fields = ("email",)
    fields = ("organization", "email", "role", "expires_at")
    readonly_fields = ("invited_by", "created_at", "accepted_at", "accepted_by", "revoked_at")
    list_select_related = ("invited_by",)
    actions = ["revoke_invitations"]

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        return [*fields, *self.readonly_fields] if obj is not None else fields

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_revoke_permission(self, request):
        return self._can(request, self.change_role)

    @admin.display(description="status")
    def status(self, invitation):
        return invitation.status

    @admin.action(description="Revoke selected invitations", permissions=["revoke"])
    def revoke_invitations(self, request, queryset):
        for invitation in queryset.select_related("organization"):
            services.invitation_revoke(
                organization=invitation.organization, invitation=invitation, actor=request.user
            )
        self.message_user(request, "Revoked the selected open invitations.")

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        initial.setdefault("expires_at", services.invitation_default_expiry())
        return initial

    def service_save(self, request, obj, form, change):
        return services.invitation_create(
            organization=self.organization_for(request, obj),
            email=obj.email,
            role=Role(obj.role),
            invited_by=request.user,
            expires_at=obj.expires_at,
        )


class GeminiCredentialForm(forms.ModelForm):
    api_key = forms.CharField(
        label="Gemini API key",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Stored encrypted; only its last four characters are shown again.",
    )

    class Meta:
        model = GeminiCredential
        fields = ("api_key",)


@admin.register(GeminiCredential)
class GeminiCredentialAdmin(TenantScopedAdmin):
    """The org's own Gemini key: owners set or replace it; others see only its last four."""

    change_role = Role.OWNER
    form = GeminiCredentialForm
    list_display = ("__str__", "last_four", "updated_at")
    readonly_fields = ("last_four", "updated_at")

    def get_fields(self, request, obj=None):
        fields = ["api_key"] if self.has_change_permission(request, obj) else []
        return [*fields, "last_four", "updated_at"] if obj is not None else fields

    def has_add_permission(self, request):
        organization = request.tenant.organization
        return (
            super().has_add_permission(request)
            and not GeminiCredential.objects.filter(organization=organization).exists()
        )

    def service_save(self, request, obj, form, change):
        return services.gemini_credential_set(
            organization=self.organization_for(request, obj),
            api_key=form.cleaned_data["api_key"],
            actor=request.user,
        )

    def service_delete(self, request, obj):
        services.gemini_credential_clear(organization=obj.organization, actor=request.user)
