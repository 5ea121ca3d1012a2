"""Request-wide middleware that runs natively under ASGI (no thread hop on the hot path)."""

import logging
import re
import time
import uuid

from asgiref.sync import async_to_sync, iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.auth import middleware as _auth
from django.contrib.messages import middleware as _messages
from django.contrib.sessions import middleware as _sessions
from django.contrib.sessions.backends import db as _db_sessions
from django.contrib.sessions.backends import signed_cookies as _cookie_sessions
from django.http import HttpResponse
from django.middleware import clickjacking as _clickjacking
from django.middleware import common as _common
from django.middleware import security as _security
from django.urls import resolve
from django.utils.functional import empty

from apps.clients.selectors import origin_is_registered

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
access_logger = logging.getLogger("ephemera.access")
_LAZY_SESSION_STORES = (_db_sessions.SessionStore, _cookie_sessions.SessionStore)
_AUDITED_MESSAGE_STORAGES = frozenset(
    f"django.contrib.messages.storage.{name}"
    for name in ("fallback.FallbackStorage", "cookie.CookieStorage", "session.SessionStorage")
)


class DualModeMiddleware:
    """Base for middleware that works in both sync and async stacks."""

    sync_capable = True
    async_capable = True

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


# --- Django's built-in middleware, async-native --------------------------------------------
#
# Under ASGI, Django's MiddlewareMixin runs every process_request and process_response in a
# thread (sync_to_async, thread_sensitive), on every request, although almost none of those
# calls does I/O. The subclasses below keep Django's code and its order of calls; they only
# choose, call by call, where it runs: on the event loop when the call is known to do no I/O
# (the reason is written on each class), in Django's thread otherwise. Anything that may
# touch the database or the cache hops: run on the loop, Django would raise
# SynchronousOnlyOperation. The sync path (WSGI, the test Client) is Django's, unchanged.
#
# Security, CSRF and X-Frame-Options stay Django's own classes in MIDDLEWARE: `check
# --deploy` finds them by their exact dotted paths (security.W001/W002/W003, and the HSTS,
# SSL-redirect, nosniff, X_FRAME_OPTIONS and CSRF-cookie checks only run if they are found),
# so a subclass under another name would switch those checks off.


class InlineHooksMixin:
    """MiddlewareMixin's ``__acall__``, with each hop decided by a ``*_needs_thread`` predicate.

    The defaults hop, as Django does; a subclass overrides a predicate only for a hook it
    has read and found free of I/O (in the cases the predicate lets through). A
    ``process_view`` is left to the handler, which runs a sync one in a thread.
    """

    def request_needs_thread(self, request) -> bool:
        return True

    def response_needs_thread(self, request, response) -> bool:
        return True

    async def __acall__(self, request):
        response = None
        if hasattr(self, "process_request"):
            if self.request_needs_thread(request):
                response = await _in_thread(self.process_request)(request)
            else:
                response = self.process_request(request)
        response = response or await self.get_response(request)
        if hasattr(self, "process_response"):
            if self.response_needs_thread(request, response):
                response = await _in_thread(self.process_response)(request, response)
            else:
                response = self.process_response(request, response)
        return response


def _in_thread(method):
    """Django's own hop: the request's thread, where its sync code and DB connection live."""
    return sync_to_async(method, thread_sensitive=True)


class SessionMiddleware(InlineHooksMixin, _sessions.SessionMiddleware):
    """The session loads lazily and is saved only when modified.

    In: ``SessionStore(key)`` only keeps the key; the database backend (and the signed
    cookie one) read nothing until the session is used. Out: ``accessed``, ``modified`` and
    ``is_empty()`` read attributes already in memory, and deleting the cookie of an emptied
    session and patching Vary touch only the response; the save, and the expiry it reads
    first, may query, so a modified (or, with SESSION_SAVE_EVERY_REQUEST, any) non-empty
    session hops. Other engines are not audited here: they hop both ways, as in Django.
    """

    def __init__(self, get_response):
        super().__init__(get_response)
        self.lazy_store = self.SessionStore in _LAZY_SESSION_STORES

    def request_needs_thread(self, request) -> bool:
        return not self.lazy_store

    def response_needs_thread(self, request, response) -> bool:
        session = getattr(request, "session", None)
        if session is None:
            return False  # Django returns the response untouched
        if not self.lazy_store:
            return True
        saves = session.modified or settings.SESSION_SAVE_EVERY_REQUEST
        return saves and not session.is_empty()


class CommonMiddleware(InlineHooksMixin, _common.CommonMiddleware):
    """In: user-agent regexes, ``get_host()`` (headers against ALLOWED_HOSTS) and, with
    PREPEND_WWW, URL resolution (in memory, as the handler's own, which runs on the loop).
    Out: the same resolution for a 404, and the Content-Length of a body already in memory
    (streaming responses are skipped)."""

    def request_needs_thread(self, request) -> bool:
        return False

    def response_needs_thread(self, request, response) -> bool:
        return False


class AuthenticationMiddleware(InlineHooksMixin, _auth.AuthenticationMiddleware):
    """Sets ``request.user`` as a lazy object and ``request.auser``; evaluates neither (the
    user is loaded by whoever asks: a sync view in its thread, ``await request.auser()``)."""

    def request_needs_thread(self, request) -> bool:
        return False


class MessageMiddleware(InlineHooksMixin, _messages.MessageMiddleware):
    """In: Django's storages only keep the request (the session one checks that it has a
    session, without loading it). Out: ``update()`` stores nothing unless messages were read
    or added, and storing may write the session, so only then does it hop.
    A MESSAGE_STORAGE of one's own hops both ways, as in Django."""

    def request_needs_thread(self, request) -> bool:
        return settings.MESSAGE_STORAGE not in _AUDITED_MESSAGE_STORAGES

    def response_needs_thread(self, request, response) -> bool:
        storage = getattr(request, "_messages", None)
        if storage is None:
            return False  # Django returns the response untouched
        if settings.MESSAGE_STORAGE not in _AUDITED_MESSAGE_STORAGES:
            return True
        return storage.used or storage.added_new


# Security and X-Frame-Options, inline, for the token endpoint's short chain
# (apps/issuance/asgi.py). MIDDLEWARE keeps Django's own classes, which check --deploy finds.


class InlineSecurityMiddleware(InlineHooksMixin, _security.SecurityMiddleware):
    """In: the SSL redirect, decided from the request's scheme, host and path. Out: headers."""

    def request_needs_thread(self, request) -> bool:
        return False

    def response_needs_thread(self, request, response) -> bool:
        return False


class InlineXFrameOptionsMiddleware(InlineHooksMixin, _clickjacking.XFrameOptionsMiddleware):
    """Out: one header, from settings and the view's exemption flag."""

    def response_needs_thread(self, request, response) -> bool:
        return False
