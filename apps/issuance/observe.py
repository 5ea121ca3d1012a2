"""Every attempt's final outcome, counted and logged once (never the token or the key).

Called by the flow (services.py) and by a store that finishes a grant its caller left
(store/base.py), once the grant's final row is written.
"""

import logging

from django.utils import timezone

from apps.audit.models import TokenGrant
from apps.issuance.contract import IssuanceError
from portal import metrics

issuance_logger = logging.getLogger("ephemera.issuance")


def refusal_observed(grant: TokenGrant, error: IssuanceError) -> None:
    if error.code == "quota_exceeded":
        metrics.QUOTA_DENIALS.labels(grant.organization.slug, error.extra["limit"]).inc()
    outcome_observed(grant)


def outcome_observed(grant: TokenGrant, *, upstream_ms: int | None = None) -> None:
    organization = grant.organization.slug
    # Only a real profile names the series: a refused request may carry any string.
    profile = grant.profile_slug if grant.profile_id else ""
    metrics.TOKEN_ISSUANCES.labels(organization, grant.outcome, profile).inc()
    issuance_logger.info(
        "issuance",
        extra={
            "request_id": grant.request_id,
            "org": organization,
            "app": grant.client_app.name if grant.client_app_id else "",
            "member_id": grant.member_id,
            "profile": grant.profile_slug,
            "outcome": grant.outcome,
            "error_code": grant.error_code,
            "grant_id": str(grant.public_id),
            "total_ms": round((timezone.now() - grant.requested_at).total_seconds() * 1000, 1),
            "upstream_ms": upstream_ms,
        },
    )
