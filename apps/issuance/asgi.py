"""The token endpoint's short path under ASGI: ``POST /api/v1/tokens`` with a client key.

Django's request cycle costs more than the issuance it wraps: per request it starts (and
later joins) a thread for its thread-sensitive context, sends the request signals and
closes the response in that thread, and runs sixteen middleware, most of them for browsers
(sessions, CSRF, messages, allauth, the tenant context). A client app's token request
carries a key and no cookie, and needs none of that. This handler serves exactly those
requests with the API's own view, auth and exception handlers, behind the middleware that
shape its response, in MIDDLEWARE's order, each run inline (none does I/O for it).
Everything else (a member's session, a preflight, another method or path) goes to Django
as it came. ``bench/issuance.py`` measures the difference; tests hold both paths to the
same answers.
"""

import asyncio
import contextlib
import io

from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.http.cookie import parse_cookie
from django.urls import reverse
from django.utils.module_loading import import_string
from ninja.errors import AuthenticationError

from apps.issuance.api import MAX_BODY_BYTES, api, client_key_auth, tokens_create

# The MIDDLEWARE entries that shape a client-key token response, outermost first, with the
# class this path runs for each. The rest are left out for the reason given.
SHORT_CHAIN = {
    "portal.middleware.RequestIdMiddleware": "portal.middleware.RequestIdMiddleware",
    "portal.middleware.AccessLogMiddleware": "portal.middleware.AccessLogMiddleware",
    "portal.middleware.ApiErrorShapeMiddleware": "portal.middleware.ApiErrorShapeMiddleware",
    "django.middleware.security.SecurityMiddleware": "portal.middleware.InlineSecurityMiddleware",
    "portal.middleware.ContentSecurityPolicyMiddleware": (
        "portal.middleware.ContentSecurityPolicyMiddleware"
    ),
    "django.middleware.common.CommonMiddleware": "portal.middleware.InlineCommonMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware": (
        "portal.middleware.InlineXFrameOptionsMiddleware"
    ),
    "portal.middleware.ApiCorsMiddleware": "portal.middleware.ApiCorsMiddleware",
}
LEFT_OUT = {
    "portal.middleware.ProbeMiddleware": "answers /healthz, /readyz and /metrics only",
    "portal.middleware.StaticFilesMiddleware": "serves STATIC_URL only",
    "django.contrib.sessions.middleware.SessionMiddleware": (
        "a request with a session cookie goes to Django"
    ),
    "django.middleware.csrf.CsrfViewMiddleware": "the API is CSRF-exempt; keys are not cookies",
    "django.contrib.auth.middleware.AuthenticationMiddleware": (
        "the caller is the key's app, not a user"
    ),
    "django.contrib.messages.middleware.MessageMiddleware": "no messages without a session",
    "allauth.account.middleware.AccountMiddleware": "acts on allauth's own pages only",
    "apps.tenants.middleware.TenantContextMiddleware": "the key names the organisation",
}


class TokenEndpointHandler(ASGIHandler):
    """Serves client-key token requests itself; hands every other request to ``django``."""

    def __init__(self, django: ASGIHandler) -> None:
        self.django = django
        self.path = reverse("api:tokens_create")
        super().__init__()

    def load_middleware(self, is_async: bool = False) -> None:
        """The short chain, wrapped as Django wraps each middleware (exceptions to responses)."""
        handler = convert_exception_to_response(_token_view)
        for name in reversed(settings.MIDDLEWARE):
            if name in SHORT_CHAIN:
                handler = convert_exception_to_response(import_string(SHORT_CHAIN[name])(handler))
        self._middleware_chain = handler

    async def __call__(self, scope, receive, send) -> None:
        if not self._is_client_key_token_request(scope):
            await self.django(scope, receive, send)
            return
        body = await _read_capped(receive, MAX_BODY_BYTES)
        if body is None:
            return  # the client left before sending its request
        request, error_response = self.create_request(scope, io.BytesIO(body))
        if request is None:
            await self.send_response(error_response, send)
            return
        if len(body) > MAX_BODY_BYTES:
            # Refused before Google is asked; listening for a hang-up would read the rest.
            await self.send_response(await self.run_get_response(request), send)
            return
        handling = asyncio.ensure_future(self.run_get_response(request))
        hangup = asyncio.ensure_future(_disconnected(receive))
        await asyncio.wait((handling, hangup), return_when=asyncio.FIRST_COMPLETED)
        hangup.cancel()
        if not handling.done():
            # As Django does: the view is cancelled (issuance records the grant ABANDONED).
            handling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await handling
            return
        await self.send_response(handling.result(), send)

    def _is_client_key_token_request(self, scope) -> bool:
        if scope["type"] != "http" or scope["method"] != "POST":
            return False
        path, root = scope["path"], scope.get("root_path", "")
        if (path.removeprefix(root) if root else path) != self.path:
            return False
        has_key = has_session = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                has_key = value[:7].lower() == b"bearer "
            elif name == b"cookie":
                has_session = has_session or _has_session_cookie(value)
        return has_key and not has_session


async def _token_view(request):
    """The API's view as ninja runs it: the key authenticated, errors in the contract. No
    member session to fall back on: a request with a session cookie went to Django."""
    try:
        request.auth = await client_key_auth(request)
        if not request.auth:
            raise AuthenticationError()
        return await tokens_create(request)
    except Exception as error:
        return api.on_exception(request, error)


async def _read_capped(receive, limit: int) -> bytes | None:
    """The body, or its first ``limit + 1`` bytes (enough to refuse it); None on hang-up."""
    chunks, size = [], 0
    while size <= limit:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        chunks.append(chunk[: limit + 1 - size])
        size += len(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _has_session_cookie(header: bytes) -> bool:
    return settings.SESSION_COOKIE_NAME in parse_cookie(header.decode("latin-1"))
