"""allauth adapters: nobody signs up locally; Google users get in only through an organisation."""

import logging
from urllib.parse import urlencode

from allauth.account.adapter import DefaultAccountAdapter
from allauth.core.exceptions import ImmediateHttpResponse
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.http import HttpResponseRedirect
from django.urls import reverse

from apps.tenants.selectors import (
    GoogleIdentity,
    is_operator_email,
    memberships_for_user,
    signin_entitlements,
)
from apps.tenants.services import memberships_join_for_identity

logger = logging.getLogger(__name__)


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request) -> bool:
        """Local sign-up is closed: the operator is created with createsuperuser."""
        return False

    def send_mail(self, template_prefix: str, email: str, context: dict) -> None:
        """Account mail may go to the platform operator only; a member's account is Google's.

        Ephemera serves none of allauth's pages that send mail (portal/urls.py); this still
        holds should an allauth upgrade start mailing from another one.
        """
        if not is_operator_email(email=email):
            logger.warning("account_mail_refused", extra={"template": template_prefix})
            return
        super().send_mail(template_prefix, email, context)


def _refuse(reason: str) -> ImmediateHttpResponse:
    url = f"{reverse('no_organization')}?{urlencode({'reason': reason})}"
    return ImmediateHttpResponse(HttpResponseRedirect(url))


class GoogleSocialAccountAdapter(DefaultSocialAccountAdapter):
    """Enforces the sign-in rules (README, "Sign-in and organisations") before allauth
    creates or logs in anyone.

    Refusals happen here, before any user row is written, so a stranger leaves no trace.
    """

    def pre_social_login(self, request, sociallogin) -> None:
        identity = GoogleIdentity.from_claims(sociallogin.account.extra_data)
        if not identity.email_verified:
            raise _refuse("unverified")
        user = sociallogin.user if sociallogin.is_existing else None
        if signin_entitlements(identity=identity):
            if user is not None:
                memberships_join_for_identity(user=user, identity=identity)
            return
        if user is not None and memberships_for_user(user=user).exists():
            return
        raise _refuse("no_organization")

    def is_open_for_signup(self, request, sociallogin) -> bool:
        return True  # pre_social_login has already refused anyone without an organisation

    def save_user(self, request, sociallogin, form=None):
        user = super().save_user(request, sociallogin, form)
        identity = GoogleIdentity.from_claims(sociallogin.account.extra_data)
        memberships_join_for_identity(user=user, identity=identity)
        return user
