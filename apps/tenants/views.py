from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

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
    """Where sign-in lands: the admin for auditors and up, a summary for plain members."""
    tenant = request.tenant
    if tenant.has_role(Role.AUDITOR):
        return redirect("admin:index")
    if tenant.organization is None:
        return redirect("no_organization")
    return render(request, "tenants/home.html", {"tenant": tenant})


@require_GET
def no_organization(request):
    reason = request.GET.get("reason", "no_organization")
    message = NO_ORGANIZATION_REASONS.get(reason, NO_ORGANIZATION_REASONS["no_organization"])
    return render(request, "tenants/no_organization.html", {"message": message}, status=403)
