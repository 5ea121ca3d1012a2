"""Template context every page shares."""

from apps.tenants.selectors import gemini_upstream_is_sandbox


def sandbox_banner(request) -> dict[str, bool]:
    """Whether to warn a signed-in person that tokens come from the sandbox, not Google.

    One place for the admin (templates/admin/base_site.html) and the member pages
    (templates/base.html), so the two can never disagree. Visitors not signed in are not told.
    """
    user = getattr(request, "user", None)
    signed_in = bool(user is not None and user.is_authenticated)
    return {"sandbox_banner": signed_in and gemini_upstream_is_sandbox()}
