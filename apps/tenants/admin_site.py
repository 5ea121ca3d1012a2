"""The tenant-aware admin site: members with a role run their organisation here."""

from urllib.parse import urlencode

from django.contrib import admin, messages
from django.http import Http404, HttpResponseRedirect
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from apps.tenants.context import ACTIVE_ORGANIZATION_SESSION_KEY
from apps.tenants.models import Role
from apps.tenants.selectors import organization_get_for_user, organizations_switchable


class TenantAdminSite(admin.AdminSite):
    site_header = "Ephemera"
    site_title = "Ephemera admin"
    index_title = "Organisation administration"
    enable_nav_sidebar = True

    def has_permission(self, request) -> bool:
        """Auditors, admins and owners of their active organisation, and the operator."""
        user = request.user
        return bool(user.is_active and user.is_authenticated) and request.tenant.has_role(
            Role.AUDITOR
        )

    def login(self, request, extra_context=None):
        """One sign-in page for everybody: Google for members, a password for the operator."""
        if request.user.is_authenticated:  # signed in, but with no role that opens the admin
            return HttpResponseRedirect(reverse("home"))
        next_url = request.GET.get("next") or reverse("admin:index")
        query = urlencode({"next": next_url})
        return HttpResponseRedirect(f"{reverse('account_login')}?{query}")

    def each_context(self, request):
        context = super().each_context(request)
        if request.user.is_authenticated:
            context["active_organization"] = request.tenant.organization
            context["active_role"] = request.tenant.role
            context["is_operator"] = request.tenant.is_operator
            context["switchable_organizations"] = organizations_switchable(user=request.user)
        return context

    def get_urls(self):
        urls = [
            path(
                "switch-organization/",
                self.admin_view(require_POST(self.switch_organization)),
                name="switch_organization",
            )
        ]
        return urls + super().get_urls()

    def switch_organization(self, request):
        """Make another of the user's organisations the active one (the operator may pick all)."""
        wanted = request.POST.get("organization", "")
        if wanted == "" and request.user.is_superuser:
            request.session.pop(ACTIVE_ORGANIZATION_SESSION_KEY, None)
            messages.info(request, "Showing every organisation.")
        else:
            organization = organization_get_for_user(user=request.user, organization_id=wanted)
            if not organizations_switchable(user=request.user).filter(pk=organization.pk).exists():
                raise Http404("No such organisation.")
            request.session[ACTIVE_ORGANIZATION_SESSION_KEY] = organization.pk
            messages.info(request, f"Now working in {organization.name}.")
        # The index, not the page it came from: that page's object belongs to the old org.
        return HttpResponseRedirect(reverse("admin:index"))
