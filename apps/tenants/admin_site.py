"""The tenant-aware admin site: members with a role run their organisation here."""

from dataclasses import dataclass
from urllib.parse import urlencode

from django.apps import apps
from django.contrib import admin, messages
from django.http import Http404, HttpResponseRedirect
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from apps.tenants.context import ACTIVE_ORGANIZATION_SESSION_KEY
from apps.tenants.models import Role
from apps.tenants.selectors import (
    ChecklistStep,
    StepState,
    onboarding_checklist,
    organization_get_for_user,
    organizations_switchable,
)


@dataclass(frozen=True)
class OnboardingAction:
    """Where a step is done in the admin, and who does it when the viewer may not."""

    model: str  # app_label.ModelName
    view: str  # "add", "change" (the step's row) or a named object view such as "guide"
    label: str
    who: str


# The page that completes each step; a step whose row exists links to that row's page.
ONBOARDING_ACTIONS = {
    "domain": OnboardingAction("tenants.Domain", "add", "Claim a domain", "the operator"),
    "gemini": OnboardingAction("tenants.GeminiCredential", "add", "Add the key", "an owner"),
    "profile": OnboardingAction(
        "policies.LiveConstraintProfile", "add", "Create a profile", "an admin"
    ),
    "client_app": OnboardingAction("clients.ClientApp", "add", "Register an app", "an admin"),
    "first_token": OnboardingAction(
        "policies.LiveConstraintProfile", "guide", "Open the client guide", "an admin"
    ),
    "auditor": OnboardingAction("tenants.Invitation", "add", "Invite an auditor", "an owner"),
}


@dataclass(frozen=True)
class OnboardingItem:
    step: ChecklistStep
    url: str | None  # the page that does it, if this viewer may act there
    action_label: str
    who: str  # shown instead of a link when the viewer's role cannot act


@dataclass(frozen=True)
class Onboarding:
    items: list[OnboardingItem]

    @property
    def total(self) -> int:
        return len(self.items)

    @property
    def done(self) -> int:
        return sum(1 for item in self.items if item.step.done)

    @property
    def complete(self) -> bool:
        return self.done == self.total


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

    def index(self, request, extra_context=None):
        """The admin's home; for those who set an organisation up, its onboarding checklist."""
        extra_context = {**(extra_context or {}), "onboarding": self.onboarding(request)}
        return super().index(request, extra_context)

    def onboarding(self, request) -> Onboarding | None:
        """The active organisation's checklist, with a link wherever this viewer may act.

        Admins and owners (and the operator inside an organisation) see it; auditors do not,
        since none of its steps is theirs to take, and nor does the operator's all-org view.
        """
        organization = request.tenant.organization
        if organization is None or not request.tenant.has_role(Role.ADMIN):
            return None
        steps = onboarding_checklist(organization=organization)
        by_key = {step.key: step for step in steps}
        return Onboarding([self._onboarding_item(request, step, by_key) for step in steps])

    def _onboarding_item(self, request, step: ChecklistStep, by_key) -> OnboardingItem:
        action = ONBOARDING_ACTIONS[step.key]
        if step.done:
            return OnboardingItem(step, None, action.label, "")
        model = apps.get_model(action.model)
        model_admin = self._registry[model]
        view, label, args = action.view, action.label, []
        if step.state == StepState.WAITING:  # claimed: its page shows the TXT record to publish
            view, label, args = "change", "See the TXT record", [step.target_id]
            allowed = model_admin.has_view_or_change_permission(request)
        elif step.key == "client_app" and step.target_id is not None:
            view, label, args = "change", "Create a key", [step.target_id]
            allowed = model_admin.has_change_permission(request)
        elif step.key == "first_token":
            profile_id = by_key["profile"].target_id
            if profile_id is None:  # nothing to ask for yet: the profile step comes first
                return OnboardingItem(step, None, label, "")
            args = [profile_id]
            allowed = model_admin.has_view_or_change_permission(request)
        else:
            allowed = model_admin.has_add_permission(request)
        if not allowed:
            return OnboardingItem(step, None, label, action.who)
        opts = model._meta
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=args)
        return OnboardingItem(step, url, label, "")

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
