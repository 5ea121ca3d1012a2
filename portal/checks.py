"""System checks for configuration that is legal for tests but wrong in production."""

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security, deploy=True)
def check_google_sign_in(app_configs, **kwargs) -> list[Warning]:
    problems = []
    if settings.GOOGLE_OAUTH_MOCK_URL:
        problems.append(
            Warning(
                "GOOGLE_OAUTH_MOCK_URL is set: sign-in talks to a fake OIDC server, not Google.",
                hint="Unset GOOGLE_OAUTH_MOCK_URL in production.",
                id="ephemera.W001",
            )
        )
    if not (settings.GOOGLE_OAUTH_CLIENT_ID and settings.GOOGLE_OAUTH_CLIENT_SECRET):
        problems.append(
            Warning(
                "Google sign-in is not configured: members cannot sign in.",
                hint="Set GOOGLE_OAUTH_CLIENT_ID and GOOGLE_OAUTH_CLIENT_SECRET.",
                id="ephemera.W002",
            )
        )
    return problems
