"""allauth's pages as Ephemera serves them: the local-account ones it does not offer, and its
password pages while the cache that holds their rate limits is out of reach."""

import logging
from collections.abc import Callable
from functools import wraps

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import add_never_cache_headers
from redis.exceptions import RedisError

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
