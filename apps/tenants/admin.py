from datetime import UTC

from allauth.account.admin import EmailAddressAdmin
from allauth.account.models import EmailAddress
from allauth.socialaccount.admin import SocialAccountAdmin, SocialAppAdmin, SocialTokenAdmin
from allauth.socialaccount.models import SocialAccount, SocialApp, SocialToken
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.admin.utils import quote, unquote
from django.contrib.auth.admin import GroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import Group
from django.contrib.sites.admin import SiteAdmin
from django.contrib.sites.models import Site
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from apps.tenants import domain_dns, services
from apps.tenants.admin_scoping import CheckedChangelistMixin, TenantScopedAdmin
from apps.tenants.forms import LAST_OWNER, InvitationForm, MembershipForm
from apps.tenants.models import (
    Domain,
    GeminiCredential,
    Invitation,
    Membership,
    Organization,
    Role,
    User,
)
from apps.tenants.roles import role_descriptions
from apps.tenants.selectors import (
    membership_is_last_owner,
    organizations_with_activity,
    portal_signin_url,
)


@admin.register(User)
class UserAdmin(CheckedChangelistMixin, DjangoUserAdmin):
    """Accounts across all organisations: the operator's alone (stock model permissions)."""


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 0
    fields = ("name", "is_verified", "verified_at", "verified_by", "last_check_result")
    readonly_fields = ("verified_at", "verified_by", "last_check_result")


@admin.register(Organization)
class OrganizationAdmin(CheckedChangelistMixin, admin.ModelAdmin):
    """The operator creates and configures organisations; members see only their own."""

    list_display = ("name", "slug", "status", "member_count", "tokens_issued_today", "created_at")
    list_filter = ("is_active",)
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("created_at",)

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.tenant.organization is not None:
            queryset = queryset.filter(pk=request.tenant.organization.pk)
        elif not request.tenant.is_operator:
            return queryset.none()
        midnight = timezone.now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return organizations_with_activity(queryset=queryset, since=midnight)

    @admin.display(description="status", ordering="is_active")
    def status(self, organization):
        return "active" if organization.is_active else "inactive"

    @admin.display(description="members", ordering="member_count")
    def member_count(self, organization):
        return organization.member_count

    @admin.display(description="tokens issued today (UTC)", ordering="tokens_issued")
    def tokens_issued_today(self, organization):
        return organization.tokens_issued

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
    form = MembershipForm
    list_display = ("user_email", "role", "joined", "last_sign_in")
    list_filter = ("role",)
    search_fields = ("user__email", "user__first_name", "user__last_name")
    fields = ("organization", "user", "role", "created_at")
    readonly_fields = ("created_at",)
    list_select_related = ("user",)
    actions = ["delete_selected"]  # replaces the site-wide one: see below

    class Media:
        css = {"all": ("ephemera/tenants.css",)}

    @admin.display(description="e-mail", ordering="user__email")
    def user_email(self, membership):
        return membership.user.email or membership.user.username

    @admin.display(description="joined", ordering="created_at")
    def joined(self, membership):
        return membership.created_at

    @admin.display(description="last sign-in", ordering="user__last_login", empty_value="never")
    def last_sign_in(self, membership):
        return membership.user.last_login

    def changelist_view(self, request, extra_context=None):
        extra_context = {"role_descriptions": role_descriptions(), **(extra_context or {})}
        return super().changelist_view(request, extra_context)

    def has_add_permission(self, request):
        return request.tenant.is_operator  # others join by invitation or verified domain

    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        return [*readonly, "user"] if obj is not None else readonly

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


class DnsCheckFilter(admin.SimpleListFilter):
    """Lets the operator find the claims whose TXT record was found and await a decision."""

    title = "DNS check"
    parameter_name = "dns"

    def lookups(self, request, model_admin):
        return [
            ("found", "record found"),
            ("not-found", "record not found"),
            ("never", "never checked"),
        ]

    def queryset(self, request, queryset):
        found = {"last_check_result": domain_dns.TxtCheck.FOUND}
        if self.value() == "found":
            return queryset.filter(**found)
        if self.value() == "not-found":
            return queryset.exclude(**found).exclude(last_checked_at=None)
        if self.value() == "never":
            return queryset.filter(last_checked_at=None)
        return queryset


@admin.register(Domain)
class DomainAdmin(TenantScopedAdmin):
    """Members see their organisation's domains; only the operator claims and verifies them.

    Admins and owners get the TXT record that proves control of a claim and "Check DNS now";
    a found record informs the operator's decision, it never verifies by itself
    (docs/adr/0016-domain-verification-by-dns.md).
    """

    check_role = Role.ADMIN
    list_display = ("name", "is_verified", "dns_check", "txt_record")
    list_filter = ("is_verified", DnsCheckFilter)
    search_fields = ("name",)
    # The last check is shown with the record, below the fields (the change form template).
    fields = ("organization", "name", "is_verified", "verified_at", "verified_by", "created_at")
    readonly_fields = ("verified_at", "verified_by", "created_at")
    actions = ["verify_domains", "check_dns"]
    change_form_template = "admin/tenants/domain/change_form.html"

    class Media:
        js = ("ephemera/copy.js",)

    def has_add_permission(self, request):
        return request.tenant.is_operator

    def has_change_permission(self, request, obj=None):
        return request.tenant.is_operator

    def has_delete_permission(self, request, obj=None):
        return request.tenant.is_operator

    def has_verify_permission(self, request):
        return request.tenant.is_operator

    def has_check_dns_permission(self, request):
        """An org's admins and owners check inside it; the operator anywhere, before deciding."""
        return request.tenant.is_operator or self._can_write(request, self.check_role)

    # --- what the list and the page show -------------------------------------------------

    def get_list_display(self, request):
        columns = super().get_list_display(request)
        if request.tenant.has_role(self.check_role):
            return columns
        return [column for column in columns if column != "txt_record"]

    @admin.display(description="TXT record to publish")
    def txt_record(self, domain):
        return format_html(
            '<span class="dns-record"><code id="txt-name-{0}">{1}</code> '
            '<button type="button" class="button" data-copy-target="txt-name-{0}">Copy name'
            '</button><br><code id="txt-value-{0}">{2}</code> '
            '<button type="button" class="button" data-copy-target="txt-value-{0}">Copy value'
            "</button></span>",
            domain.pk,
            domain_dns.challenge_name(domain.name),
            domain_dns.challenge_value(domain.verification_token),
        )

    @admin.display(description="DNS check", ordering="last_checked_at")
    def dns_check(self, domain):
        """What the last check found; a found record on an unverified claim waits on the
        operator, who is the one reading this column to decide."""
        if domain.last_checked_at is None:
            return "never checked"
        checked = timezone.localtime(domain.last_checked_at).strftime("%Y-%m-%d %H:%M")
        if domain.last_check_result != domain_dns.TxtCheck.FOUND:
            return f"{domain.last_check_result} ({checked})"
        waiting = "" if domain.is_verified else "; awaiting the operator"
        return f"TXT verified ({checked}){waiting}"

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context.update(
                dns_record_name=domain_dns.challenge_name(obj.name),
                dns_record_value=domain_dns.challenge_value(obj.verification_token),
                dns_record_found=obj.last_check_result == domain_dns.TxtCheck.FOUND,
                dns_check=self.dns_check(obj),
                show_dns_record=request.tenant.has_role(self.check_role),
                can_check_dns=self.has_check_dns_permission(request),
                can_verify=self.has_verify_permission(request) and not obj.is_verified,
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    # --- "Check DNS now" and the operator's one-click verification ------------------------

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/check-dns/",
                view(self.check_dns_view),
                name="tenants_domain_check_dns",
            ),
            path("<path:object_id>/verify/", view(self.verify_view), name="tenants_domain_verify"),
            *super().get_urls(),
        ]

    def _domain_or_404(self, request, object_id, allowed: bool) -> Domain:
        """The claim inside the active organisation; a foreign row is as missing as none."""
        if not allowed:
            raise PermissionDenied
        domain = self.get_object(request, unquote(object_id))
        if domain is None:
            raise Http404("No such domain.")
        return domain

    def _check(self, request, domain) -> None:
        domain = services.domain_check_dns(
            organization=self.organization_for(request, domain), domain=domain, actor=request.user
        )
        record = domain_dns.challenge_name(domain.name)
        if domain.last_check_result == domain_dns.TxtCheck.FOUND:
            self.message_user(
                request,
                f"DNS check of {domain}: found the TXT record at {record}. "
                + (
                    "The domain is verified."
                    if domain.is_verified
                    else "The platform operator can now verify the domain."
                ),
                messages.SUCCESS,
            )
        else:
            self.message_user(
                request,
                f"DNS check of {domain}: {domain.last_check_result} at {record}.",
                messages.WARNING,
            )

    def check_dns_view(self, request, object_id):
        domain = self._domain_or_404(request, object_id, self.has_check_dns_permission(request))
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        self._check(request, domain)
        return HttpResponseRedirect(reverse("admin:tenants_domain_change", args=[quote(domain.pk)]))

    def verify_view(self, request, object_id):
        domain = self._domain_or_404(request, object_id, self.has_verify_permission(request))
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        self._verify(request, [domain])
        return HttpResponseRedirect(reverse("admin:tenants_domain_change", args=[quote(domain.pk)]))

    def _verify(self, request, domains) -> None:
        unproven = []
        for domain in domains:
            if not domain.is_verified and domain.last_check_result != domain_dns.TxtCheck.FOUND:
                unproven.append(domain.name)
            services.domain_verify(
                organization=domain.organization, domain=domain, actor=request.user
            )
        self.message_user(request, f"Verified {len(domains)} domain(s).")
        if unproven:
            self.message_user(
                request,
                f"No DNS check found the TXT record of {', '.join(unproven)}: "
                "verified on your word alone.",
                messages.WARNING,
            )

    @admin.action(description="Verify selected domains", permissions=["verify"])
    def verify_domains(self, request, queryset):
        self._verify(request, list(queryset.select_related("organization")))

    @admin.action(description="Check DNS now for selected domains", permissions=["check_dns"])
    def check_dns(self, request, queryset):
        for domain in queryset.select_related("organization"):
            self._check(request, domain)

    # --- the operator's writes -----------------------------------------------------------

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
    """Owners invite exact addresses; an invitation is e-mailed, sent again or revoked, never
    edited.

    The e-mail goes out once the admin's transaction has committed (``add_view``): a slow
    mail server holds no lock, and a failing one loses no invitation. Whatever happens, the
    owner is shown the sign-in link to hand over another way.
    """

    change_role = Role.OWNER
    form = InvitationForm
    list_display = ("email", "role", "status", "expires", "invited_by", "emailed", "accepted")
    list_filter = ("role",)
    search_fields = ("email",)
    fields = ("organization", "email", "role", "expires_at")
    readonly_fields = (
        "invited_by",
        "created_at",
        "last_sent_at",
        "send_count",
        "accepted_at",
        "accepted_by",
        "revoked_at",
    )
    list_select_related = ("invited_by",)
    actions = ["revoke_invitations"]
    created_attribute = "_ephemera_invitation_created"  # set on the request by service_save

    class Media:
        js = ("ephemera/copy.js",)
        css = {"all": ("ephemera/tenants.css",)}

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        return [*fields, *self.readonly_fields] if obj is not None else fields

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_revoke_permission(self, request):
        return self._can_write(request, self.change_role)

    @admin.display(description="status")
    def status(self, invitation):
        return invitation.status

    @admin.display(description="expires", ordering="expires_at")
    def expires(self, invitation):
        return _short_time(invitation.expires_at)

    @admin.display(description="e-mailed", ordering="last_sent_at")
    def emailed(self, invitation):
        if not invitation.send_count:
            return "not yet"
        last = timezone.localtime(invitation.last_sent_at).strftime("%-d %b")
        return f"{invitation.send_count}×, last {last}"

    @admin.display(description="accepted", ordering="accepted_at", empty_value="-")
    def accepted(self, invitation):
        return _short_time(invitation.accepted_at) if invitation.accepted_at else None

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
        invitation = services.invitation_create(
            organization=self.organization_for(request, obj),
            email=obj.email,
            role=Role(obj.role),
            invited_by=request.user,
            expires_at=obj.expires_at,
        )
        setattr(request, self.created_attribute, invitation)
        return invitation

    def add_view(self, request, form_url="", extra_context=None):
        response = super().add_view(request, form_url, extra_context)
        created = request.__dict__.pop(self.created_attribute, None)
        if created is not None:  # saved, and the admin's transaction has ended
            self._deliver(request, created)
        return response

    # --- the invitation's page: its link, "send again" and "revoke" ------------------------

    def _signin_url(self, request) -> str:
        return portal_signin_url(request_base_url=request.build_absolute_uri("/"))

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            is_open = obj.status == "pending"
            context.update(
                invitation_open=is_open,
                invitation_signin_url=self._signin_url(request) if is_open else "",
                can_manage_invitation=self.has_revoke_permission(request),
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/resend/",
                view(require_POST(self.resend_view)),
                name="tenants_invitation_resend",
            ),
            path(
                "<path:object_id>/revoke/",
                view(require_POST(self.revoke_view)),
                name="tenants_invitation_revoke",
            ),
            *super().get_urls(),
        ]

    def _invitation_or_404(self, request, object_id) -> Invitation:
        """The invitation inside the active organisation; a foreign one is as missing as none."""
        if not self.has_revoke_permission(request):
            raise PermissionDenied
        invitation = self.get_object(request, unquote(object_id))
        if invitation is None:
            raise Http404("No such invitation.")
        return invitation

    def _back_to(self, invitation) -> HttpResponseRedirect:
        return HttpResponseRedirect(
            reverse("admin:tenants_invitation_change", args=[quote(invitation.pk)])
        )

    def resend_view(self, request, object_id):
        invitation = self._invitation_or_404(request, object_id)
        if invitation.status == "pending":
            self._deliver(request, invitation)
        else:
            self.message_user(
                request,
                f"This invitation is {invitation.status}, so it cannot be sent again. "
                f"Invite {invitation.email} anew instead.",
                messages.ERROR,
            )
        return self._back_to(invitation)

    def revoke_view(self, request, object_id):
        invitation = self._invitation_or_404(request, object_id)
        if invitation.accepted_at is not None:
            self.message_user(
                request,
                f"{invitation.email} has already accepted this invitation: remove their "
                "membership instead.",
                messages.ERROR,
            )
        elif invitation.revoked_at is not None:
            self.message_user(request, "This invitation was already revoked.", messages.INFO)
        else:
            services.invitation_revoke(
                organization=invitation.organization, invitation=invitation, actor=request.user
            )
            self.message_user(
                request,
                f"Revoked: signing in as {invitation.email} no longer lets anyone in through "
                "this invitation.",
                messages.SUCCESS,
            )
        return self._back_to(invitation)

    def _deliver(self, request, invitation) -> None:
        """Send the e-mail and tell the owner how it went, with the link to copy either way."""
        signin_url = self._signin_url(request)
        delivery = services.invitation_send(
            organization=invitation.organization,
            invitation=invitation,
            signin_url=signin_url,
            actor=request.user,
        )
        link = format_html(
            '<span class="invitation-link"><code id="invitation-link-{0}">{1}</code> '
            '<button type="button" class="button" data-copy-target="invitation-link-{0}">'
            "Copy link</button></span>",
            invitation.pk,
            signin_url,
        )
        if delivery == services.InvitationDelivery.SENT:
            text, level = (
                "Invitation e-mailed to {0}. They accept by signing in with Google as that "
                "address; the link to share another way: {1}",
                messages.SUCCESS,
            )
        elif delivery == services.InvitationDelivery.FAILED:
            text, level = (
                "The invitation for {0} is saved, but the e-mail could not be sent: the mail "
                "server did not take it. Send them this sign-in link yourself: {1}",
                messages.WARNING,
            )
        elif delivery == services.InvitationDelivery.THROTTLED:
            text, level = (
                "Nothing was sent: the invitation for {0} was e-mailed less than "
                f"{services.INVITATION_RESEND_INTERVAL.seconds // 60} minutes ago, or "
                f"{services.INVITATION_MAX_SENDS} times already. Send them this sign-in link "
                "yourself: {1}",
                messages.WARNING,
            )
        else:
            text, level = (
                "This portal does not send e-mail, so nothing was sent. The invitation for "
                "{0} is saved: send them this sign-in link yourself: {1}",
                messages.WARNING,
            )
        self.message_user(request, format_html(text, invitation.email, link), level)


def _short_time(moment) -> str:
    """A list column's date and time, narrow enough for a phone."""
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M")


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


# --- Django's and allauth's own models: the operator's, out of sight unless asked for ------


class PlatformInternalsAdmin:
    """Mixed into the stock admins of groups, sites and allauth's accounts, apps and tokens.

    Ephemera's operator runs organisations, not these: they leave the index and the sidebar
    unless a superuser asks (``/admin/?internals=1``, linked from the organisations list) or
    is already inside their app's pages. Every URL still answers him as before; tenant roles
    get nothing from them either way (stock model permissions).
    """

    def has_module_permission(self, request):
        if not super().has_module_permission(request):
            return False
        app_index = reverse("admin:app_list", kwargs={"app_label": self.opts.app_label})
        return request.GET.get("internals") == "1" or request.path.startswith(app_index)


for _model, _stock in (
    (Group, GroupAdmin),
    (Site, SiteAdmin),
    (EmailAddress, EmailAddressAdmin),
    (SocialApp, SocialAppAdmin),
    (SocialAccount, SocialAccountAdmin),
    (SocialToken, SocialTokenAdmin),
):
    admin.site.unregister(_model)  # registered by importing its stock admin, above
    admin.site.register(
        _model,
        type(_stock.__name__, (PlatformInternalsAdmin, CheckedChangelistMixin, _stock), {}),
    )
