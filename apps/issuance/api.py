"""The public API (README, "The API"): ``POST /api/v1/tokens`` and ``GET /api/v1/profiles``;
``GET /api/v1/usage`` is apps/audit/api.py's router, mounted on the same ``api``.

Views stay thin: authenticate, parse, call the issuance service, shape the answer. Every
error leaves as ``{"error": {"code", "message", ...}}`` with a stable code.
"""

import functools
import logging
from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Any, Literal

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
from apps.issuance import request_body
from apps.issuance.contract import (
    ERROR_CODES,
    ERROR_CODES_BY_NAME,
    INTERNAL_ERROR_MESSAGE,
    Caller,
    ErrorCode,
    IssuanceError,
    TokenRequest,
    code_for_status,
)
from apps.issuance.rules import READ_KEY_REFUSED
from apps.issuance.selectors import profile_locks_for_caller
from apps.issuance.services import refusal_record, token_issue
from apps.issuance.store import issuance_store
from apps.policies.live_schema import setup_field_names
from apps.tenants.models import Role

MAX_BODY_BYTES = 16 * 1024
logger = logging.getLogger(__name__)


class TokenRequestIn(pydantic.BaseModel):
    """What a client may ask for; anything else is refused, not ignored.

    Only `profile` is required. The other fields may only ask for less than the profile
    (and the organisation's plan) allow; asking for more is refused with `invalid_request`.
    """

    model_config = pydantic.ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"profile": "support-voice", "end_user": "user-4821"}]},
    )

    profile: str = pydantic.Field(
        min_length=1,
        max_length=64,
        description="The slug of the Live constraint profile the token is minted under; the "
        "client app must be allowed to use it (GET /api/v1/profiles lists them).",
        examples=["support-voice"],
    )
    end_user: str = pydantic.Field(
        default="",
        max_length=200,
        description="Your own opaque id for the end user the session is for: per-end-user "
        "quotas count by it and the audit trail records it. Never an email or a name. "
        "Ignored for a member's session, whose end user is the member.",
        examples=["user-4821"],
    )
    uses: int | None = pydantic.Field(
        default=None,
        ge=0,
        le=1_000_000,
        description="How many Live sessions the token may open; at most the profile's "
        "`uses` (0, unlimited, only under a profile that is unlimited). Default: the profile's.",
        examples=[1],
    )
    expire_seconds: int | None = pydantic.Field(
        default=None,
        ge=1,
        le=86_400,
        description="Seconds until the token expires (a session open by then may go on "
        "resuming); at most the profile's `expire_seconds`. Default: the profile's.",
        examples=[600],
    )
    new_session_seconds: int | None = pydantic.Field(
        default=None,
        ge=1,
        le=86_400,
        description="Seconds during which the token may start a new session; at most the "
        "profile's `new_session_seconds` and the token's lifetime. Default: the profile's.",
        examples=[60],
    )

    @pydantic.field_validator("uses", "expire_seconds", "new_session_seconds", mode="before")
    @classmethod
    def whole_numbers_are_integers(cls, value):
        """JSON has one number type: ``600.0`` is the integer its schema promises to take."""
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value


CONFIG_EXAMPLE = {
    "response_modalities": ["AUDIO"],
    "speech_config": {"voice_config": {"prebuilt_voice_config": {"voice_name": "Kore"}}},
    "system_instruction": "You help customers of Acme with their orders.",
}
WHOLE_SETUP_EXAMPLE = list(setup_field_names())

Lock = Annotated[
    Literal["whole_setup", "fields"],
    pydantic.Field(
        description="How a token binds the client's Live setup. `whole_setup`: Google replaces "
        "the client's whole setup (BidiGenerateContentSetup) with the token's, so everything "
        "the client sends in it is dropped, fields the profile leaves unset (`tools`) "
        "included. `fields`: only `locked_fields` are the token's; the client sets the rest.",
        examples=["whole_setup"],
    ),
]
LockedFields = Annotated[
    list[str],
    pydantic.Field(
        description="The setup fields a client cannot change, as camelCase wire paths. With "
        "`lock` `whole_setup`: every field of the setup; with `fields`: the token's field "
        "mask (e.g. `generationConfig.temperature`). Empty: the client may set everything.",
        examples=[WHOLE_SETUP_EXAMPLE, ["model", "generationConfig.responseModalities"]],
    ),
]
LiveConfig = Annotated[
    dict[str, Any],
    pydantic.Field(
        description="The profile's LiveConnectConfig, as a client passes it to the SDK "
        "(`client.aio.live.connect(model=…, config=…)`): snake_case, as stored and as the "
        "Python SDK (google-genai) takes it. The SDKs take the camelCase spelling too "
        "(`responseModalities`), which is how @google/genai names it. Send it with `model` "
        "unchanged and the session is the one the token locks.",
        examples=[CONFIG_EXAMPLE],
    ),
]
Model = Annotated[
    str,
    pydantic.Field(
        description="The Gemini Live model the token is for; connect with exactly this one.",
        examples=["gemini-2.0-flash-live-001"],
    ),
]
ProfileSlug = Annotated[
    str, pydantic.Field(description="The profile's slug.", examples=["support-voice"])
]


class TokenOut(Schema):
    """A minted token, and what it lets the client do."""

    token: str = pydantic.Field(
        description="The ephemeral token: the Live API key a client connects with (v1alpha "
        "only). Hand it to the one end user's session, never log it.",
        examples=["auth_tokens/4f1c2b3a5d6e7f80"],
    )
    expire_time: datetime = pydantic.Field(
        description="When the token expires (UTC, ISO 8601); sessions it opened may go on "
        "resuming until then.",
        examples=["2026-01-31T12:30:00Z"],
    )
    new_session_expire_time: datetime = pydantic.Field(
        description="Until when the token may start a new session (UTC, ISO 8601).",
        examples=["2026-01-31T12:21:00Z"],
    )
    uses: int = pydantic.Field(
        description="How many sessions the token may start; 0 is unlimited.", examples=[1]
    )
    profile: ProfileSlug
    model: Model
    lock: Lock
    locked_fields: LockedFields
    config: LiveConfig
    grant_id: str = pydantic.Field(
        description="The audit record of this token (its grant); quote it to support.",
        examples=["0f8e2c7a-3b1d-4e59-9a6c-2d7b8e1f4a30"],
    )
    sandbox: bool = pydantic.Field(
        description="True when the portal mints through a sandbox upstream instead of "
        "Google: the token does not work against the real Live API.",
        examples=[False],
    )


class ProfileOut(Schema):
    """A profile this caller may ask tokens for, and what such a token locks."""

    slug: ProfileSlug
    name: str = pydantic.Field(description="The profile's display name.", examples=["Support"])
    description: str = pydantic.Field(
        description="What the profile is for, as its admins wrote it (may be empty).",
        examples=["The voice agent on the help pages."],
    )
    model: Model
    uses: int = pydantic.Field(
        description="Sessions a token may start at most (a request may ask fewer); 0 is unlimited.",
        examples=[1],
    )
    expire_seconds: int = pydantic.Field(
        description="A token's lifetime at most, in seconds.", examples=[1800]
    )
    new_session_seconds: int = pydantic.Field(
        description="How long a token may start new sessions at most, in seconds.",
        examples=[60],
    )
    lock: Lock
    locked_fields: LockedFields
    config: LiveConfig


KEY_MISSING_MESSAGE = "Send a valid client key: Authorization: Bearer eph_…"
SIGNED_OUT_MESSAGE = "Your session has ended: sign in again, or send a client key."

ERROR_EXAMPLES = {
    "invalid_request": "expire_seconds: input should be less than or equal to 86400",
    "unauthenticated": KEY_MISSING_MESSAGE,
    "forbidden": "This client app may not use profile 'support-voice'.",
    "profile_not_found": "No profile 'support-voice'.",
    "not_found": "There is no /api/v1/tokenz.",
    "method_not_allowed": "GET is not allowed on /api/v1/tokens.",
    "quota_exceeded": "Quota exceeded: each end user quota 1 per hour.",
    "internal_error": INTERNAL_ERROR_MESSAGE,
    "upstream_error": "Google answered 400 INVALID_ARGUMENT.",
    "upstream_unavailable": "Google could not be reached.",
    "quota_backend_unavailable": "Quotas cannot be checked right now; no token was issued.",
    "upstream_timeout": "Google did not answer in time.",
}
RETRY_AFTER = {
    "description": "Seconds to wait before asking again.",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
    "example": 30,
}


def _pascal(code: str) -> str:
    return "".join(part.title() for part in code.split("_"))


@functools.cache
def error_schema(status: int, codes: tuple[str, ...]) -> type[Schema]:
    """The error body of one status, ``code`` an enum of the codes given (all of them at it)."""
    meanings = "; ".join(f"`{code}`: {ERROR_CODES_BY_NAME[code].meaning}" for code in codes)
    example = {"code": codes[0], "message": ERROR_EXAMPLES[codes[0]]}
    fields: dict[str, Any] = {
        "code": (
            Literal[codes],
            pydantic.Field(
                description=f"Stable; branch on it. {meanings}",
                examples=[codes[0]],
                json_schema_extra={"enum": list(codes)},  # an enum even of one code
            ),
        ),
        "message": (
            str,
            pydantic.Field(
                description="A plain sentence for the developer; it may change, so do not "
                "parse it.",
                examples=[example["message"]],
            ),
        ),
    }
    if "invalid_request" in codes:
        example["field"] = "expire_seconds"
        fields["field"] = (
            str | None,
            pydantic.Field(
                None,
                description="The field or part of the request at fault (`profile`, "
                "`expire_seconds`, `body`, `Content-Type`, a query parameter), when one is.",
                examples=[example["field"]],
            ),
        )
        fields["details"] = (
            list[dict[str, Any]] | None,
            pydantic.Field(
                None,
                description="For a query string the schema refuses (GET /api/v1/usage): "
                "each problem, with `loc`, `msg` and `type`.",
                examples=[[{"loc": ["query", "from"], "msg": "Field required", "type": "missing"}]],
            ),
        )
    if "quota_exceeded" in codes:
        example["limit"] = "each end user quota 1 per hour"
        fields["limit"] = (
            str,
            pydantic.Field(
                description="The quota or plan limit that was hit (the one that keeps the "
                "caller waiting longest, when several are).",
                examples=[example["limit"]],
            ),
        )
    everything = tuple(error.code for error in ERROR_CODES if error.status == status)
    name = f"Error{status}" + ("" if codes == everything else "".join(map(_pascal, codes)))
    answer = f"HTTP {status}"
    body = pydantic.create_model(
        f"{name}Body",
        __base__=Schema,
        __doc__=f"What went wrong, in the contract's terms ({answer}).",
        **fields,
    )
    return pydantic.create_model(
        f"{name}Out",
        __base__=Schema,
        __doc__=f"An error answer ({answer}): always one `error` object.",
        error=(
            body,
            pydantic.Field(description="The one error of this answer.", examples=[example]),
        ),
    )


def documented_errors(*codes: str) -> tuple[dict[int, type[Schema]], dict[int, dict]]:
    """An operation's error answers: per status, its schema and what OpenAPI says of it.

    Each status's description lists its codes with their meaning (contract.ERROR_CODES);
    a status whose codes ask for a retry declares the ``Retry-After`` header.
    """
    by_status: dict[int, list[ErrorCode]] = {}
    for code in codes:
        error = ERROR_CODES_BY_NAME[code]
        by_status.setdefault(error.status, []).append(error)
    models, docs = {}, {}
    for status, errors in sorted(by_status.items()):
        models[status] = error_schema(status, tuple(error.code for error in errors))
        lines = [f"**{HTTPStatus(status).phrase}.**", ""]
        lines += [f"- `{error.code}`: {error.meaning}" for error in errors]
        docs[status] = {"description": "\n".join(lines)}
        if any(error.retry for error in errors):
            docs[status]["headers"] = {"Retry-After": RETRY_AFTER}
    return models, docs


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

API_VERSION = "1.1.0"


def _error_table() -> str:
    rows = [
        f"| {error.status} | `{error.code}` | {error.meaning} | {'yes' if error.retry else 'no'} |"
        for error in ERROR_CODES
    ]
    return "\n".join(["| Status | `error.code` | Meaning | Retry |", "|---|---|---|---|", *rows])


API_DESCRIPTION = f"""\
Short-lived Gemini Live API tokens, one per end-user session, with quotas and an audit trail.

Your backend asks `POST /api/v1/tokens` with its client key (`Authorization: Bearer eph_…`)
and hands the token, the `model` and the `config` to the end user's client, which opens the
Live session with them (the SDK's `live.connect`, API version v1alpha).

**What a token locks.** `lock` says how the token binds the client's Live setup, and
`locked_fields` lists what the client cannot change: with `whole_setup`, Google replaces the
client's whole setup with the token's, so every setup field is listed (a client's own `tools`
do not survive); with `fields`, only the token's field mask is. `config` is the profile's
LiveConnectConfig in snake_case, as the Python SDK takes it; the SDKs take camelCase too.

**Versions.** This document describes version {API_VERSION} of the contract. The path's `v1`
is its major version: within it, answers only gain fields (1.1 added `lock` and `config`),
requests and error codes keep their meaning, and a client must ignore fields it does not
know. A change that breaks a client would be `v2`, beside `v1`.

**Errors.** Every error answers `{{"error": {{"code": "…", "message": "…"}}}}`, with `field` on
`invalid_request` (the field at fault) and `limit` on `quota_exceeded` (the limit hit). Branch
on `code`, never on `message`. Answers that ask for a retry carry `Retry-After` (seconds).
Under `/api/` an unknown path answers 404 `not_found` and a known path asked with a method it
does not take answers 405 `method_not_allowed`, in the same shape.

{_error_table()}
"""

api = NinjaAPI(
    title="Ephemera API",
    version=API_VERSION,
    description=API_DESCRIPTION,
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
    """A browser whose session ended (a session cookie, no key) is told to sign in again,
    not to send a client key it should never hold."""
    session_only = (
        settings.SESSION_COOKIE_NAME in request.COOKIES and "HTTP_AUTHORIZATION" not in request.META
    )
    message = SIGNED_OUT_MESSAGE if session_only else KEY_MISSING_MESSAGE
    return error_response("unauthenticated", message, 401)


@api.exception_handler(HttpError)
def on_http_error(request, exc):
    return error_response(code_for_status(exc.status_code), str(exc), exc.status_code)


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
    return error_response("internal_error", INTERNAL_ERROR_MESSAGE, 500)


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
    return request_body.refused("body", f"is over {MAX_BODY_BYTES} bytes")


def _parse(request: HttpRequest, caller: Caller) -> TokenRequest:
    """The body read strictly (apps/issuance/request_body.py), then against the schema."""
    content_type = request.content_type or ""
    if content_type != "application/json":
        raise request_body.refused("Content-Type", "send application/json")
    if request.content_params.get("charset", "utf-8").lower() not in ("utf-8", "utf8"):
        raise request_body.refused("Content-Type", "the charset must be utf-8")
    if int(request.META.get("CONTENT_LENGTH") or 0) > MAX_BODY_BYTES:
        raise _body_too_big()
    try:
        body = request.body  # sent chunked, without a length: Django caps it at its own limit
    except RequestDataTooBig:
        raise _body_too_big() from None
    if len(body) > MAX_BODY_BYTES:
        raise _body_too_big()
    data = request_body.json_object(body)
    try:
        parsed = TokenRequestIn.model_validate(data)
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        field = ".".join(request_body.shown_key(str(part)) for part in first["loc"]) or "body"
        message = "is not allowed" if first["type"] == "extra_forbidden" else first["msg"].lower()
        raise request_body.refused(field, message) from None
    fields = parsed.model_dump()
    if caller.member is not None:
        # A member's per-end-user quota must not be dodged by naming another end user.
        fields["end_user"] = f"member:{caller.member.pk}"
    return TokenRequest(**fields)


def _profiles(caller: Caller) -> list[dict[str, Any]]:
    """ProfileOut's fields: the profile's own, then what a token under it locks."""
    own = [name for name in ProfileOut.model_fields if name not in ("lock", "locked_fields")]
    return [
        {
            **{name: getattr(profile, name) for name in own},
            "lock": lock.lock,
            "locked_fields": list(lock.locked_fields),
        }
        for profile, lock in profile_locks_for_caller(caller=caller)
    ]


TOKEN_ERRORS, TOKEN_ERROR_DOCS = documented_errors(
    "invalid_request",
    "unauthenticated",
    "forbidden",
    "profile_not_found",
    "quota_exceeded",
    "internal_error",
    "upstream_error",
    "upstream_unavailable",
    "quota_backend_unavailable",
    "upstream_timeout",
)
PROFILE_ERRORS, PROFILE_ERROR_DOCS = documented_errors(
    "unauthenticated", "forbidden", "internal_error"
)


@api.post(
    "/tokens",
    response={201: TokenOut, **TOKEN_ERRORS},
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "What the token is for: a profile, and optionally the end user "
            "and less than the profile allows. Send Content-Type: application/json.",
            "content": {"application/json": {"schema": TokenRequestIn.model_json_schema()}},
        },
        "responses": {
            201: {"description": "**Created.** The token, and what it locks."},
            **TOKEN_ERROR_DOCS,
        },
    },
    summary="Issue an ephemeral Gemini Live token for one end-user session",
    description=(
        "Mints one Gemini Live token under a profile, for one session of one of your end "
        "users, within the organisation's quotas, and records the attempt in the audit "
        "trail whatever its outcome. Call it from your backend with a client key that "
        "issues tokens (a member's signed-in session may too, with `X-CSRFToken`); the key "
        "must never reach a browser. Hand `token`, `model` and `config` to the client: it "
        "connects with the token as its API key, on v1alpha, and `lock` with "
        "`locked_fields` say which of its own setup survives. The answer is never cached "
        "(`Cache-Control: no-store`)."
    ),
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


@api.get(
    "/profiles",
    response={200: list[ProfileOut], **PROFILE_ERRORS},
    openapi_extra={
        "responses": {
            200: {"description": "**OK.** The profiles, by name."},
            **PROFILE_ERROR_DOCS,
        }
    },
    summary="The profiles this caller may ask tokens for",
    description=(
        "The organisation's active profiles this client app may use (for a member's "
        "session: those open to members), each with its terms and what a token under it "
        "locks (`lock`, `locked_fields`) and the `config` a client connects with, as "
        "POST /api/v1/tokens would answer them now. A read-only usage key is refused."
    ),
)
async def profiles_list(request: HttpRequest):
    """The profiles this caller may request tokens for, with what their tokens lock."""
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
