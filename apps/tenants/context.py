"""Who is acting, in which organisation, with which role: resolved once per request."""

from dataclasses import dataclass

from apps.tenants.models import Organization, Role
from apps.tenants.selectors import memberships_for_user

ACTIVE_ORGANIZATION_SESSION_KEY = "active_organization_id"


@dataclass(frozen=True)
class TenantContext:
    """The acting user's organisation and role.

    ``organization`` is None for an anonymous user, a user without organisations, and the
    operator looking across all organisations. The operator holds every role everywhere.
    """

    organization: Organization | None = None
    role: Role | None = None
    is_operator: bool = False

    def has_role(self, role: Role) -> bool:
        if self.is_operator:
            return True
        return self.organization is not None and self.role is not None and self.role >= role


def tenant_context_for_request(request) -> TenantContext:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not user.is_active:
        return TenantContext()
    wanted = request.session.get(ACTIVE_ORGANIZATION_SESSION_KEY)
    if user.is_superuser:
        organization = Organization.objects.filter(pk=wanted).first() if wanted else None
        return TenantContext(organization=organization, is_operator=True)
    memberships = list(memberships_for_user(user=user))
    if not memberships:
        return TenantContext()
    chosen = next((m for m in memberships if m.organization_id == wanted), None)
    if chosen is None:  # default: the first organisation the user can administer or audit
        chosen = next((m for m in memberships if m.role >= Role.AUDITOR), memberships[0])
    return TenantContext(organization=chosen.organization, role=Role(chosen.role))
