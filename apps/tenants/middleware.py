from django.utils.functional import SimpleLazyObject

from apps.tenants.context import tenant_context_for_request
from portal.middleware import DualModeMiddleware


class TenantContextMiddleware(DualModeMiddleware):
    """Attach ``request.tenant`` (a TenantContext), resolved lazily on first use."""

    def before(self, request):
        request.tenant = SimpleLazyObject(lambda: tenant_context_for_request(request))
        return None
