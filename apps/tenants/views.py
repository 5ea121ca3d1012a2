from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET

from apps.issuance.contract import Caller
from apps.issuance.selectors import profile_locks_for_caller, profiles_for_caller
from apps.policies.guides import CLIENT_KEY_ENV, profile_guide
from apps.tenants.models import Role

NO_ORGANIZATION_REASONS = {
    "unverified": "Google reports that this account's e-mail address is not verified.",
    "no_organization": (
        "This Google account does not belong to any organisation on Ephemera. Sign in with "
        "your work account, or ask your organisation's owner for an invitation to this "
        "exact address."
    ),
}


@require_GET
@login_required
def home(request):
    """The profiles the signed-in member may get tokens for in the active organisation, as
    the API's session path decides (``profiles_for_caller``), each with what its tokens lock,
    and the way into the admin for auditors and up. The operator, who is no member of
    anything, goes on to the admin."""
    tenant = request.tenant
    if tenant.is_operator:
        return redirect("admin:index")
    if tenant.organization is None:
        return redirect("no_organization")
    context = {
        "tenant": tenant,
        "organization": tenant.organization,
        "profiles": profile_locks_for_caller(caller=_member_caller(request)),
        "can_administer": tenant.has_role(Role.AUDITOR),
    }
    return render(request, "tenants/home.html", context)


@require_GET
@login_required
def profile_guide_page(request, slug: str):
    """The client guide the admin's profile page shows, for a profile members may use.

    Only a profile the member's session may use in the active organisation: any other slug,
    another organisation's included, is the same 404.
    """
    tenant = request.tenant
    if tenant.is_operator:
        raise Http404("No such profile.")
    if tenant.organization is None:
        return redirect("no_organization")
    profile = get_object_or_404(profiles_for_caller(caller=_member_caller(request)), slug=slug)
    guide = profile_guide(profile=profile, portal_url=request.build_absolute_uri("/"))
    context = {
        "organization": tenant.organization,
        "profile": profile,
        "guide": guide,
        "client_key_env": CLIENT_KEY_ENV,
        "can_administer": tenant.has_role(Role.AUDITOR),
    }
    return render(request, "tenants/profile_guide.html", context)


def _member_caller(request) -> Caller:
    """The signed-in member as the API's session path sees them (apps/issuance/api.py)."""
    return Caller(organization=request.tenant.organization, member=request.user)


@require_GET
def no_organization(request):
    reason = request.GET.get("reason", "no_organization")
    message = NO_ORGANIZATION_REASONS.get(reason, NO_ORGANIZATION_REASONS["no_organization"])
    return render(request, "tenants/no_organization.html", {"message": message}, status=403)
