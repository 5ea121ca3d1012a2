from django.utils.functional import SimpleLazyObject

from apps.tenants.context import tenant_context_for_request


class TenantContextMiddleware:
    """Attach ``request.tenant`` (a TenantContext), resolved lazily on first use."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.tenant = SimpleLazyObject(lambda: tenant_context_for_request(request))
        return self.get_response(request)
