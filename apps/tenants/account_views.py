"""allauth's pages as Ephemera serves them: the local-account ones it does not offer, its
password pages while the cache that holds their rate limits is out of reach, and the page a
Google sign-in is refused to when it cannot be linked to the user holding its address."""

import logging
from collections.abc import Callable
from functools import wraps

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_GET
from redis.exceptions import RedisError

from apps.tenants import adapters

logger = logging.getLogger(__name__)

# What a refused sign-in tells the browser to wait: long enough for Redis to come back.
SIGN_IN_RETRY_AFTER_SECONDS = 30


def not_offered(request: HttpRequest, *args, **kwargs) -> HttpResponse:
    """A 404 that says why, for allauth's sign-up, password reset and address pages.

    Members sign in with Google, so they have no password and their address is Google's; the
    operator resets a lost password on the server (``manage.py changepassword``). Reset by
    e-mail would need a mail server and would make a mailbox the key to the operator account.
    """
    return render(request, "account/not_offered.html", status=404)


# What each refusal of the linking rule (apps/tenants/adapters.py) tells the person, and what
# they can do about it. An unknown reason gets the first, most general one.
SIGN_IN_REFUSALS = {
    adapters.NOT_VOUCHED: (
        "An account with this address is already on Ephemera, and no organisation vouches "
        "for this Google account being its holder: the address's domain is not one your "
        "organisation verified, and there is no open invitation to it.",
        "Ask your organisation's owner to invite this address again, then sign in.",
    ),
    adapters.NOT_AUTHORITATIVE: (
        "An account with this address is already on Ephemera, but this Google account is "
        "neither a Gmail nor a Google Workspace account, so Google cannot vouch that whoever "
        "holds it still holds the address.",
        "Sign in with your Google Workspace account for this address, or ask the platform "
        "operator to help.",
    ),
    adapters.UNVERIFIED: (
        "Google reports that this account's e-mail address is not verified.",
        "Verify the address with Google, then sign in again.",
    ),
    adapters.AMBIGUOUS: (
        "More than one account on Ephemera has this address, so Ephemera cannot tell which "
        "one is yours.",
        "Ask the platform operator to remove the duplicate account.",
    ),
    adapters.OPERATOR: (
        "This address belongs to the platform operator's account, which signs in with its "
        "password only.",
        "Open “Platform operator sign-in” on the sign-in page.",
    ),
    adapters.INACTIVE: (
        "The account with this address has been deactivated.",
        "Ask the platform operator to reactivate it.",
    ),
    adapters.CONNECT_NOT_OFFERED: (
        "Ephemera does not add more Google accounts to an account that is signed in.",
        "Sign out, then sign in with the Google account you want to use.",
    ),
}


@require_GET
def sign_in_refused(request: HttpRequest) -> HttpResponse:
    """Where a Google sign-in ends when the linking rule refuses it: why, and what to do.

    Nothing was created or linked; the person is not signed in. The refusal itself was the
    callback's redirect here; this page only explains it, so it answers 200 (a 403 would read
    as a broken page in the browser's console).
    """
    reason = request.GET.get("reason", "")
    problem, remedy = SIGN_IN_REFUSALS.get(reason, SIGN_IN_REFUSALS[adapters.NOT_VOUCHED])
    context = {"problem": problem, "remedy": remedy}
    return render(request, "account/sign_in_refused.html", context)


def for_password_holders(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """An allauth page that confirms a password, closed to those who have none.

    Members sign in with Google and hold no password; allauth would answer them with a bare
    403. Only the operator's account has one to confirm.
    """

    @wraps(view)
    def guarded(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        user = request.user
        if user.is_authenticated and not user.has_usable_password():
            return not_offered(request)
        return view(request, *args, **kwargs)

    return guarded


def unavailable_while_cache_is_down(
    view: Callable[..., HttpResponse],
) -> Callable[..., HttpResponse]:
    """An allauth password view that answers 503 while its rate limits' cache is unreachable.

    allauth keeps those limits in the cache (Redis); without them a password would be open to
    unlimited guessing, so the view refuses, and says so, instead of failing with a 500.
    Google sign-in counts nothing in the cache and keeps working.
    """

    @wraps(view)
    def guarded(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except RedisError as error:
            logger.warning(
                "sign_in_unavailable", extra={"path": request.path, "error": type(error).__name__}
            )
            response = render(request, "account/sign_in_unavailable.html", status=503)
            response["Retry-After"] = str(SIGN_IN_RETRY_AFTER_SECONDS)
            add_never_cache_headers(response)
            return response

    return guarded
