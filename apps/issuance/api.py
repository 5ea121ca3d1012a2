"""The public API (README, "The API"): ``POST /api/v1/tokens`` and ``GET /api/v1/profiles``;
``GET /api/v1/usage`` is apps/audit/api.py's router, mounted on the same ``api``.

Views stay thin: authenticate, parse, call the issuance service, shape the answer. Every
error leaves as ``{"error": {"code", "message", ...}}`` with a stable code.
"""

import json
import logging
from datetime import datetime

import pydantic
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from ninja import NinjaAPI, Schema
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.security import APIKeyCookie, HttpBearer
from ninja.utils import check_csrf

from apps.clients.models import ClientKey
from apps.issuance.contract import Caller, IssuanceError, TokenRequest
from apps.issuance.rules import READ_KEY_REFUSED
from apps.issuance.selectors import profiles_for_caller
from apps.issuance.services import refusal_record, token_issue
from apps.issuance.store import issuance_store
from apps.tenants.models import Role

MAX_BODY_BYTES = 16 * 1024
logger = logging.getLogger(__name__)


class TokenRequestIn(pydantic.BaseModel):
    """What a client may ask for; anything else is refused, not ignored."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True)

    profile: str = pydantic.Field(min_length=1, max_length=64)
    end_user: str = pydantic.Field(default="", max_length=200)
    uses: int | None = pydantic.Field(default=None, ge=0, le=1_000_000)
    expire_seconds: int | None = pydantic.Field(default=None, ge=1, le=86_400)
    new_session_seconds: int | None = pydantic.Field(default=None, ge=1, le=86_400)

    @pydantic.field_validator("uses", "expire_seconds", "new_session_seconds", mode="before")
    @classmethod
    def whole_numbers_are_integers(cls, value):
        """JSON has one number type: ``600.0`` is the integer its schema promises to take."""
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value


class TokenOut(Schema):
    token: str
    expire_time: datetime
    new_session_expire_time: datetime
    uses: int
    profile: str
    model: str
    locked_fields: list[str]
    grant_id: str
    sandbox: bool


class ProfileOut(Schema):
    slug: str
    name: str
    description: str
    model: str
    uses: int
    expire_seconds: int
    new_session_seconds: int


class ErrorBody(Schema):
    code: str
    message: str


class ErrorOut(Schema):
    error: ErrorBody


class ClientKeyAuth(HttpBearer):
    """``Authorization: Bearer eph_…``: the key names its app and organisation.

    Looked up by issuance's store, where the token path's other statements run (on the
    event loop on PostgreSQL + Redis, else in issuance's database threads).
    """

    async def authenticate(self, request: HttpRequest, token: str) -> ClientKey | None:
        return await issuance_store().client_key(token)


class MemberSessionAuth(APIKeyCookie):
    """A signed-in member of the active organisation, with Django's CSRF check."""

    param_name = settings.SESSION_COOKIE_NAME

    def __init__(self) -> None:
        super().__init__(csrf=False)  # checked below, so a failure keeps the error contract

    def authenticate(self, request: HttpRequest, key: str | None):
        if key is None:
            return None  # no session cookie: no member, and no session to load
        tenant = request.tenant
        if not request.user.is_authenticated or tenant.organization is None:
            return None
        if not tenant.has_role(Role.MEMBER) or tenant.is_operator:
            return None
        if check_csrf(request) is not None:
            raise HttpError(403, "CSRF check failed: send the X-CSRFToken header.")
        return request.user


_member_session = MemberSessionAuth()
client_key_auth = ClientKeyAuth()

api = NinjaAPI(
    title="Ephemera",
    version="1",
    description="Short-lived Gemini Live API tokens, per end-user session, with quotas and audit.",
    urls_namespace="api",
    auth=[client_key_auth, _member_session],
)


def error_response(
    code: str, message: str, status: int, retry_after: int | None = None, **extra
) -> JsonResponse:
    response = JsonResponse({"error": {"code": code, "message": message, **extra}}, status=status)
    if retry_after:
        response["Retry-After"] = str(retry_after)
    response["Cache-Control"] = "no-store"
    return response


@api.exception_handler(AuthenticationError)
def on_unauthenticated(request, exc):
    return error_response(
        "unauthenticated", "Send a valid client key: Authorization: Bearer eph_…", 401
    )


@api.exception_handler(HttpError)
def on_http_error(request, exc):
    code = {400: "invalid_request", 401: "unauthenticated", 403: "forbidden"}.get(
        exc.status_code, "invalid_request"
    )
    return error_response(code, str(exc), exc.status_code)


@api.exception_handler(NinjaValidationError)
def on_validation_error(request, exc):
    return error_response("invalid_request", "The request is not valid.", 400, details=exc.errors)


@api.exception_handler(IssuanceError)
def on_issuance_error(request, exc):
    return error_response(exc.code, exc.message, exc.http_status, exc.retry_after, **exc.extra)


@api.exception_handler(Exception)
def on_unexpected_error(request, exc):
    """Even a bug answers in the contract's shape; the details go to the log, not the caller."""
    logger.exception("unexpected error in %s %s", request.method, request.path)
    return error_response("internal_error", "Something went wrong; no token was issued.", 500)


def _caller(request: HttpRequest) -> Caller:
    principal = request.auth
    meta = request.META
    common = {
        "request_id": getattr(request, "request_id", ""),
        "ip": meta.get("REMOTE_ADDR") or None,
        "user_agent": meta.get("HTTP_USER_AGENT", ""),
    }
    if isinstance(principal, ClientKey):
        return Caller(
            organization=principal.organization,
            client_app=principal.client_app,
            client_key_prefix=principal.prefix,
            origin=request.headers.get("Origin", ""),
            scope=principal.scope,
            **common,
        )
    return Caller(organization=request.tenant.organization, member=principal, **common)


def _admitted_caller(request: HttpRequest) -> Caller:
    """The authenticated caller, with what the access log and CORS answer need from it."""
    caller = _caller(request)
    request.log_context = {
        "org": caller.organization.slug,
        "app": caller.client_app.name if caller.client_app is not None else "",
    }
    if caller.client_app is not None and caller.origin in caller.client_app.allowed_origins:
        request.cors_origin = caller.origin  # ApiCorsMiddleware answers this origin
    return caller


async def _token_request(request: HttpRequest, caller: Caller) -> TokenRequest:
    """The request's body as issuance reads it; a bad one is refused and recorded."""
    try:
        return _parse(request, caller)
    except IssuanceError as error:
        await refusal_record(caller=caller, error=error)
        raise


def _body_too_big() -> IssuanceError:
    return IssuanceError("invalid_request", 400, f"The body is over {MAX_BODY_BYTES} bytes.")


def _parse(request: HttpRequest, caller: Caller) -> TokenRequest:
    content_type = request.content_type or ""
    if content_type != "application/json":
        raise IssuanceError("invalid_request", 400, "Send Content-Type: application/json.")
    if int(request.META.get("CONTENT_LENGTH") or 0) > MAX_BODY_BYTES:
        raise _body_too_big()
    try:
        body = request.body  # sent chunked, without a length: Django caps it at its own limit
    except RequestDataTooBig:
        raise _body_too_big() from None
    if len(body) > MAX_BODY_BYTES:
        raise _body_too_big()
    try:
        data = json.loads(body or b"null")
    except ValueError:
        raise IssuanceError("invalid_request", 400, "The body is not valid JSON.") from None
    try:
        parsed = TokenRequestIn.model_validate(data)
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "body"
        message = "is not allowed" if first["type"] == "extra_forbidden" else first["msg"].lower()
        raise IssuanceError(
            "invalid_request", 400, f"{field}: {message}", extra={"field": field}
        ) from None
    fields = parsed.model_dump()
    if caller.member is not None:
        # A member's per-end-user quota must not be dodged by naming another end user.
        fields["end_user"] = f"member:{caller.member.pk}"
    return TokenRequest(**fields)


def _profiles(caller: Caller) -> list:
    return list(profiles_for_caller(caller=caller))


ERRORS = {status: ErrorOut for status in (400, 401, 403, 404, 429, 500, 502, 503, 504)}


@api.post(
    "/tokens",
    response={201: TokenOut, **ERRORS},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": TokenRequestIn.model_json_schema()}},
        }
    },
    summary="Issue an ephemeral Gemini Live token for one end-user session",
)
async def tokens_create(request: HttpRequest):
    caller = _admitted_caller(request)
    token_request = await _token_request(request, caller)
    issued = await token_issue(caller=caller, request=token_request)
    # TokenOut's fields as they are (IssuedToken already has their types), rendered by ninja.
    body = {name: getattr(issued, name) for name in TokenOut.model_fields}
    response = api.create_response(request, body, status=201)
    response["Cache-Control"] = "no-store"
    return response


@api.get("/profiles", response={200: list[ProfileOut], 401: ErrorOut, 403: ErrorOut, 500: ErrorOut})
async def profiles_list(request: HttpRequest):
    """The profiles this caller may request tokens for."""
    caller = _caller(request)
    if caller.scope != ClientKey.Scope.ISSUE:
        raise HttpError(403, READ_KEY_REFUSED)
    if not caller.organization.is_active or (
        caller.client_app is not None and not caller.client_app.is_active
    ):
        raise HttpError(403, "This client app or organisation is disabled.")
    return await sync_to_async(_profiles)(caller)


# The other routers on this API, each in its own app's module (mounted there, on ``api``).
import apps.audit.api  # noqa: E402, F401  isort: skip
