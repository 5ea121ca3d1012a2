"""``GET /api/v1/usage``: issued, denied and failed grants per UTC day, app and profile.

For finance: an auditor's session, or a client key made to read usage
(docs/adr/0019-read-only-usage-keys.md). Mounted on the issuance API's ``api`` object, so
it shares its error shape (``{"error": {"code", "message"}}``) and its OpenAPI document.
"""

from datetime import date, timedelta
from typing import Literal

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from ninja import Field, Query, Router, Schema
from ninja.errors import HttpError
from ninja.security import APIKeyCookie

from apps.audit import selectors
from apps.audit.usage_csv import usage_csv
from apps.clients.models import ClientKey
from apps.issuance.api import api, client_key_auth, documented_errors
from apps.tenants.models import Organization, Role

DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"


class SessionUserAuth(APIKeyCookie):
    """A signed-in user; whether they may read usage is the view's decision, so that a
    member is told 403 (not allowed) rather than 401 (not signed in).

    No CSRF check: the endpoint only reads (GET), which CSRF protection leaves alone.
    """

    param_name = settings.SESSION_COOKIE_NAME

    def __init__(self) -> None:
        super().__init__(csrf=False)

    def authenticate(self, request: HttpRequest, key: str | None):
        if key is None or not request.user.is_authenticated:
            return None
        return request.user


class UsageQuery(Schema):
    from_: str = Field(
        alias="from",
        pattern=DATE_PATTERN,
        description="First UTC day, YYYY-MM-DD (included).",
        examples=["2026-01-01"],
        json_schema_extra={"format": "date"},
    )
    to: str = Field(
        pattern=DATE_PATTERN,
        description=f"Last UTC day, YYYY-MM-DD (included); at most "
        f"{selectors.USAGE_MAX_DAYS} days after `from`.",
        examples=["2026-01-31"],
        json_schema_extra={"format": "date"},
    )
    app: str | None = Field(
        None,
        max_length=200,
        description="Only this client app: its name, or its id.",
        examples=["web"],
    )
    profile: str | None = Field(
        None, max_length=64, description="Only this profile (its slug).", examples=["voice"]
    )
    format: Literal["json", "csv"] = Field(
        "json",
        description="`json` (the default), or `csv`: the same rows as a CSV file with a "
        "header line.",
        examples=["json"],
    )


ISSUED = "Tokens issued."
DENIED = "Requests refused by policy or quota."
FAILED = "Requests that failed upstream (Google's errors) or were abandoned."
ROW_EXAMPLE = {
    "day": "2026-01-31",
    "app": "web",
    "profile": "voice",
    "issued": 120,
    "denied": 3,
    "failed": 1,
}


class UsageRowOut(Schema):
    """One UTC day's requests of one client app under one profile."""

    day: date = Field(description="The UTC day counted.", examples=["2026-01-31"])
    app: str | None = Field(
        description="The client app's name; null for members' own tokens and deleted apps.",
        examples=["web"],
    )
    profile: str | None = Field(
        description="The profile's slug; null if none or deleted.", examples=["voice"]
    )
    issued: int = Field(description=ISSUED, examples=[120])
    denied: int = Field(description=DENIED, examples=[3])
    failed: int = Field(description=FAILED, examples=[1])


class UsageTotalsOut(Schema):
    """The sums of every row."""

    issued: int = Field(description=ISSUED, examples=[120])
    denied: int = Field(description=DENIED, examples=[3])
    failed: int = Field(description=FAILED, examples=[1])


class UsageOut(Schema):
    """The organisation's usage over the days asked for."""

    from_: date = Field(
        alias="from", description="The first day counted, as asked.", examples=["2026-01-01"]
    )
    to: date = Field(description="The last day counted, as asked.", examples=["2026-01-31"])
    rows: list[UsageRowOut] = Field(
        description="One row per day, app and profile that had any request, in that order; "
        "days without requests have no row.",
        examples=[[ROW_EXAMPLE]],
    )
    totals: UsageTotalsOut = Field(
        description="The rows summed.", examples=[{"issued": 120, "denied": 3, "failed": 1}]
    )


USAGE_ERRORS, USAGE_ERROR_DOCS = documented_errors(
    "invalid_request", "unauthenticated", "forbidden", "internal_error"
)


router = Router(tags=["usage"])
_session_user = SessionUserAuth()


def _reader_organization(request: HttpRequest) -> Organization:
    """The organisation whose usage this caller may read; 403 for anyone else.

    A key reads its own organisation's, only if it was made to read usage; a session reads
    its active organisation's, from the auditor role up. There is no organisation to ask
    for: the credential decides.
    """
    principal = request.auth
    if isinstance(principal, ClientKey):
        if principal.scope != ClientKey.Scope.READ_USAGE:
            raise HttpError(403, "This key issues tokens; reading usage needs a read-usage key.")
        if not principal.organization.is_active or not principal.client_app.is_active:
            raise HttpError(403, "This client app or organisation is disabled.")
        request.log_context = {
            "org": principal.organization.slug,
            "app": principal.client_app.name,
        }
        return principal.organization
    tenant = request.tenant
    if tenant.organization is None or not tenant.has_role(Role.AUDITOR):
        raise HttpError(403, "Reading usage needs the auditor role in the active organisation.")
    return tenant.organization


def _day(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise HttpError(400, f"{name}: {value} is not a day (YYYY-MM-DD).") from None


def _report(organization: Organization, query: UsageQuery) -> selectors.UsageReport:
    first, last = _day(query.from_, "from"), _day(query.to, "to")
    if last < first:
        raise HttpError(400, "to: the last day is before the first.")
    if last - first >= timedelta(days=selectors.USAGE_MAX_DAYS):
        raise HttpError(400, f"to: a range is at most {selectors.USAGE_MAX_DAYS} days.")
    client_app = profile = None
    if query.app:
        client_app = selectors.client_app_by_id_or_name(organization=organization, value=query.app)
        if client_app is None:
            raise HttpError(400, f"app: no client app '{query.app}' in this organisation.")
    if query.profile:
        profile = selectors.profile_by_slug(organization=organization, slug=query.profile)
        if profile is None:
            raise HttpError(400, f"profile: no profile '{query.profile}' in this organisation.")
    return selectors.usage_report(
        organization=organization, first=first, last=last, client_app=client_app, profile=profile
    )


@router.get(
    "",
    auth=[client_key_auth, _session_user],
    response={200: UsageOut, **USAGE_ERRORS},
    by_alias=True,
    summary="Issued, denied and failed tokens per day, app and profile",
    description=(
        "For finance and audit. Counts the organisation's token requests per UTC day, client "
        "app and profile, `from`…`to` (both included, at most "
        f"{selectors.USAGE_MAX_DAYS} days), up to the last minutes. Send a client key made "
        "to *read usage* (`Authorization: Bearer eph_…`; a key that issues tokens is "
        "refused, and a read key cannot issue), or a signed-in session with the auditor "
        "role or higher. The key's (or the session's active) organisation is the one "
        "reported. `format=csv` answers `text/csv` with the header "
        "`day,app,profile,issued,denied,failed`."
    ),
    openapi_extra={
        "responses": {
            **USAGE_ERROR_DOCS,
            200: {
                "description": "**OK.** The usage, as JSON or (`format=csv`) as CSV.",
                "content": {
                    "text/csv": {
                        "schema": {"type": "string"},
                        "example": "day,app,profile,issued,denied,failed\r\n"
                        "2026-01-31,web,voice,120,3,1\r\n",
                    }
                },
            },
        }
    },
)
async def usage_read(request: HttpRequest, query: Query[UsageQuery]):
    # In a thread: a session's tenant (its role in the active organisation) is read lazily.
    organization = await sync_to_async(_reader_organization)(request)
    report = await sync_to_async(_report)(organization, query)
    if query.format == "csv":
        response = HttpResponse(usage_csv(report), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = (
            f'attachment; filename="usage-{organization.slug}-{report.first}-{report.last}.csv"'
        )
    else:
        body = {
            "from": report.first,
            "to": report.last,
            "rows": [row.__dict__ for row in report.rows],
            "totals": report.totals,
        }
        response = api.create_response(request, body, status=200)
    response["Cache-Control"] = "no-store"
    return response


api.add_router("/usage", router)
