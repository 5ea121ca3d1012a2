"""The portal's own middleware, and Django's for the token endpoint's short path, inline.

The portal's classes work in both sync and async chains (Django's
``sync_and_async_middleware``), so under ASGI they run on the event loop. Django's own
middleware runs as Django runs it on the Django path (member sessions, the admin); only the
short path (apps/issuance/asgi.py), which client apps hit at volume, runs the three it needs
inline (docs/adr/0008-async-native-middleware.md).
"""

import json
import logging
import re
import time
import uuid

from asgiref.sync import async_to_sync, iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpResponse, JsonResponse
from django.middleware import clickjacking as _clickjacking
from django.middleware import common as _common
from django.middleware import security as _security
from django.urls import resolve
from django.utils.decorators import sync_and_async_middleware
from django.utils.functional import empty

from apps.clients.selectors import origin_is_registered
from apps.issuance.contract import ERROR_CODES_BY_NAME, INTERNAL_ERROR_MESSAGE, code_for_status

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
access_logger = logging.getLogger("ephemera.access")


class DualModeMiddleware:
    """Base for middleware that works in both sync and async chains: every subclass is
    marked with Django's ``sync_and_async_middleware`` (so Django never adapts it with a
    thread hop), and runs ``before`` and ``after`` around the next handler, awaited when
    the chain is async."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        sync_and_async_middleware(cls)

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        early = self.before(request)
        response = early if early is not None else self.get_response(request)
        return self.after(request, response)

    async def __acall__(self, request):
        early = self.before(request)
        response = early if early is not None else await self.get_response(request)
        return self.after(request, response)

    def before(self, request):
        return None

    def after(self, request, response):
        return response


class RequestIdMiddleware(DualModeMiddleware):
    """Every response names its request: the caller's X-Request-ID if sane, else a new one."""

    def before(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        request.request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        return None

    def after(self, request, response):
        response["X-Request-ID"] = request.request_id
        return response


class AccessLogMiddleware(DualModeMiddleware):
    """One structured line per request: who (org, app), what, how it ended, how long it took.

    The path is logged without its query string, and the organisation only if something
    already resolved it (``request.log_context`` from the API, or an evaluated tenant):
    logging must never cost a query. Probes and static files log at DEBUG.
    """

    def before(self, request):
        request.started_at = time.perf_counter()
        return None

    def after(self, request, response):
        quiet = request.path in PROBE_PATHS or request.path.startswith(settings.STATIC_URL)
        access_logger.log(
            logging.DEBUG if quiet else logging.INFO,
            "request",
            extra={
                "request_id": getattr(request, "request_id", ""),
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - request.started_at) * 1000, 1),
                **_resolved_tenant(request),
                **getattr(request, "log_context", {}),
            },
        )
        return response


def _resolved_tenant(request) -> dict[str, str]:
    tenant = request.__dict__.get("tenant")
    wrapped = getattr(tenant, "_wrapped", None)
    if wrapped is None or wrapped is empty or wrapped.organization is None:
        return {}
    return {"org": wrapped.organization.slug}


class ApiCorsMiddleware(DualModeMiddleware):
    """CORS for /api/: preflights for registered origins; answers only to an allowed origin.

    The issuance service refuses (403, audited) a key used from an origin its app does not
    list, so a response that reaches here with an Origin was allowed for that app.
    """

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        if self._is_preflight(request):
            origin = request.headers.get("Origin", "")
            return self._preflight(request, origin_is_registered(origin=origin))
        return self.after(request, self.get_response(request))

    async def __acall__(self, request):
        if self._is_preflight(request):
            origin = request.headers.get("Origin", "")
            allowed = await sync_to_async(origin_is_registered)(origin=origin)
            return self._preflight(request, allowed)
        return self.after(request, await self.get_response(request))

    @staticmethod
    def _is_preflight(request) -> bool:
        return (
            request.method == "OPTIONS"
            and request.path.startswith("/api/")
            and "Access-Control-Request-Method" in request.headers
        )

    def _preflight(self, request, allowed: bool):
        response = HttpResponse(status=204)
        origin = request.headers.get("Origin", "")
        if origin and allowed:
            response["Access-Control-Allow-Origin"] = origin
            response["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response["Access-Control-Allow-Headers"] = "Authorization, Content-Type, X-Request-ID"
            response["Access-Control-Max-Age"] = "600"
        response["Vary"] = "Origin"
        return response

    def after(self, request, response):
        origin = request.headers.get("Origin", "")
        if request.path.startswith("/api/") and getattr(request, "cors_origin", None) == origin:
            response["Access-Control-Allow-Origin"] = origin
            response["Access-Control-Expose-Headers"] = "Retry-After, X-Request-ID"
            response["Vary"] = "Origin"
        return response


class ApiErrorShapeMiddleware(DualModeMiddleware):
    """Every error under /api/ in the contract's shape, ``{"error": {"code", "message"}}``.

    The API's own handlers shape what reaches ninja. What Django or ninja answer around
    them does not: Django's HTML 404 for an unknown path, ninja's empty 405 for a wrong
    method, the 400 for a Host outside ALLOWED_HOSTS (raised by CommonMiddleware, or by
    SecurityMiddleware's HTTPS redirect, hence this sits outside both), a crash in a
    middleware. Such an answer is rewritten with the same status and headers (``Allow``
    included), its code read from the status; the answer is errors-only work, so a token
    response costs one comparison.
    """

    def after(self, request, response):
        if response.status_code < 400 or response.streaming:
            return response
        path = request.path_info
        if not (path.startswith("/api/") or path == "/api") or _in_error_shape(response):
            return response
        return _shaped(request, response)


_NOT_COPIED = frozenset({"content-type", "content-length"})


def _in_error_shape(response) -> bool:
    if not response.get("Content-Type", "").startswith("application/json"):
        return False
    try:
        body = json.loads(response.content)
    except ValueError:
        return False
    error = body.get("error") if isinstance(body, dict) else None
    return (
        isinstance(error, dict)
        and isinstance(error.get("code"), str)
        and isinstance(error.get("message"), str)
    )


def _shaped(request, response) -> JsonResponse:
    status = response.status_code
    code = code_for_status(status)
    message = ERROR_CODES_BY_NAME[code].meaning
    if code == "invalid_request":
        message = _bad_request_message(request)
    elif code == "method_not_allowed" and response.has_header("Allow"):
        message = f"{request.method} is not allowed here; use {response['Allow']}."
    elif code == "internal_error":
        message = INTERNAL_ERROR_MESSAGE
    shaped = JsonResponse({"error": {"code": code, "message": message}}, status=status)
    for name, value in response.items():
        if name.lower() not in _NOT_COPIED:
            shaped[name] = value
    shaped.cookies = response.cookies
    shaped["Cache-Control"] = "no-store"
    return shaped


def _bad_request_message(request) -> str:
    try:
        request.get_host()
    except DisallowedHost:
        return "The Host header names a host this server does not answer to."
    return "The request is malformed."


class StaticFilesMiddleware(DualModeMiddleware):
    """WhiteNoise's file serving without its sync-only middleware in the async chain.

    WhiteNoise wraps every request when used as middleware; being sync-only, it would push
    each API call through an extra thread hop. Here only static paths ever touch it.
    """

    def __init__(self, get_response):
        super().__init__(get_response)
        from whitenoise.middleware import WhiteNoiseMiddleware

        self.whitenoise = WhiteNoiseMiddleware(get_response=lambda request: None)

    def before(self, request):
        if not request.path_info.startswith(self.whitenoise.static_prefix):
            return None
        response = self.whitenoise(request)  # the file's response, or None to carry on
        if response is not None and self.is_async and response.streaming:
            # Django would read a sync file iterator whole (and warn) before sending it.
            response.streaming_content = _chunks_in_a_thread(iter(response.streaming_content))
        return response


async def _chunks_in_a_thread(chunks):
    """A file's sync chunk iterator as an async one; each read happens off the event loop."""
    read = sync_to_async(next, thread_sensitive=False)
    while (chunk := await read(chunks, None)) is not None:
        yield chunk


class ContentSecurityPolicyMiddleware(DualModeMiddleware):
    """Sends ``settings.SECURE_CSP`` as the Content-Security-Policy header.

    Django 5.2 has no CSP of its own; the setting has the shape of Django 6.0's ``SECURE_CSP``
    (directive -> sources), so moving to the built-in middleware is a one-line change.
    A response that already carries a policy keeps its own. Under DEBUG, Django's technical
    404 and 500 pages, which are all inline styles and scripts, go without one.
    """

    def __init__(self, get_response):
        super().__init__(get_response)
        self.header = csp_header(getattr(settings, "SECURE_CSP", {}))
        self.debug = settings.DEBUG

    def after(self, request, response):
        if self.debug and response.status_code in (404, 500):
            return response
        if self.header and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = self.header
        return response


def csp_header(policy: dict[str, list[str]]) -> str:
    """``{"default-src": ["'self'"]}`` -> ``"default-src 'self'"``; empty lists stand alone."""
    return "; ".join(" ".join([directive, *sources]) for directive, sources in policy.items())


class ProbeMiddleware(DualModeMiddleware):
    """Answers /healthz, /readyz and /metrics before host validation, sessions and CSRF.

    Load balancers probe (and Prometheus scrapes) each web process by its address, which is
    not in ALLOWED_HOSTS, so CommonMiddleware would refuse them with a 400. The probes build
    no URL from the Host header, so skipping that check is safe. SecurityMiddleware runs
    first and leaves the probes on plain HTTP through SECURE_REDIRECT_EXEMPT. The views are
    the ones urls.py names.
    """

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        view = self._probe_view(request)
        if view is None:
            return self.get_response(request)
        return async_to_sync(view)(request) if iscoroutinefunction(view) else view(request)

    async def __acall__(self, request):
        view = self._probe_view(request)
        if view is None:
            return await self.get_response(request)
        if iscoroutinefunction(view):
            return await view(request)
        return await sync_to_async(view)(request)

    @staticmethod
    def _probe_view(request):
        if request.path_info not in PROBE_PATHS or request.method not in ("GET", "HEAD"):
            return None
        return resolve(request.path_info, getattr(request, "urlconf", None)).func


# --- Django's middleware for the token endpoint's short path, inline ------------------------
#
# Under ASGI, Django's MiddlewareMixin runs every process_request and process_response in a
# thread (sync_to_async, thread_sensitive), although these three do no I/O. The short path
# (apps/issuance/asgi.py) runs them inline: Django's code, in Django's order of calls, on the
# event loop (bench/middleware.py measures what that saves; docs/adr/0008). MIDDLEWARE keeps
# Django's own classes: `check --deploy` finds Security and X-Frame-Options by their dotted
# paths, and the Django path is the low-volume one.


class InlineHooksMixin:
    """MiddlewareMixin's ``__acall__`` with its hooks called inline: for middleware whose
    hooks were read and found free of I/O. A ``process_view`` is left to the handler."""

    async def __acall__(self, request):
        response = None
        if hasattr(self, "process_request"):
            response = self.process_request(request)
        response = response or await self.get_response(request)
        if hasattr(self, "process_response"):
            response = self.process_response(request, response)
        return response


class InlineSecurityMiddleware(InlineHooksMixin, _security.SecurityMiddleware):
    """In: the SSL redirect, decided from the request's scheme, host and path. Out: headers."""


class InlineCommonMiddleware(InlineHooksMixin, _common.CommonMiddleware):
    """In: user-agent regexes, ``get_host()`` (headers against ALLOWED_HOSTS) and, with
    PREPEND_WWW, URL resolution (in memory). Out: the same resolution for a 404, and the
    Content-Length of a body already in memory (streaming responses are skipped)."""


class InlineXFrameOptionsMiddleware(InlineHooksMixin, _clickjacking.XFrameOptionsMiddleware):
    """Out: one header, from settings and the view's exemption flag."""
