from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from apps.policies.guides import CLIENT_KEY_ENV, profile_guide
from apps.tenants.models import Role
from apps.tenants.selectors import member_profile_cards, member_profile_get

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
    """Where sign-in lands: the profiles its members may get tokens for, in the active
    organisation, with the way into the admin for auditors and up. The operator, who is no
    member of anything, goes on to the admin."""
    tenant = request.tenant
    if tenant.is_operator:
        return redirect("admin:index")
    if tenant.organization is None:
        return redirect("no_organization")
    context = {
        "tenant": tenant,
        "organization": tenant.organization,
        "profiles": member_profile_cards(organization=tenant.organization),
        "can_administer": tenant.has_role(Role.AUDITOR),
    }
    return render(request, "tenants/home.html", context)


@require_GET
@login_required
def profile_guide_page(request, slug: str):
    """The client guide the admin's profile page shows, for a profile members may use.

    Only the active organisation's ``member_profiles``: any other slug is the same 404.
    """
    tenant = request.tenant
    if tenant.is_operator:
        raise Http404("No such profile.")
    if tenant.organization is None:
        return redirect("no_organization")
    profile = member_profile_get(organization=tenant.organization, slug=slug)
    guide = profile_guide(profile=profile, portal_url=request.build_absolute_uri("/"))
    context = {
        "organization": tenant.organization,
        "profile": profile,
        "guide": guide,
        "client_key_env": CLIENT_KEY_ENV,
        "can_administer": tenant.has_role(Role.AUDITOR),
    }
    return render(request, "tenants/profile_guide.html", context)


@require_GET
def no_organization(request):
    reason = request.GET.get("reason", "no_organization")
    message = NO_ORGANIZATION_REASONS.get(reason, NO_ORGANIZATION_REASONS["no_organization"])
    return render(request, "tenants/no_organization.html", {"message": message}, status=403)
