"""allauth adapters: nobody signs up locally; Google users get in only through an organisation."""

from urllib.parse import urlencode

from allauth.account.adapter import DefaultAccountAdapter
from allauth.core.exceptions import ImmediateHttpResponse
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.http import HttpResponseRedirect
from django.urls import reverse

from apps.tenants.selectors import GoogleIdentity, memberships_for_user, signin_entitlements
from apps.tenants.services import memberships_join_for_identity


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request) -> bool:
        """Local sign-up is closed: the operator is created with createsuperuser."""
        return False


def _refuse(reason: str) -> ImmediateHttpResponse:
    url = f"{reverse('no_organization')}?{urlencode({'reason': reason})}"
    return ImmediateHttpResponse(HttpResponseRedirect(url))


class GoogleSocialAccountAdapter(DefaultSocialAccountAdapter):
    """Enforces DESIGN.md §4 before allauth creates or logs in anyone.

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
