"""allauth adapters: nobody signs up locally; Google users get in only through an organisation,
and a Google account reaches an existing user only under the linking rule below
(docs/adr/0017-linking-google-identities.md)."""

import logging
from dataclasses import dataclass
from urllib.parse import urlencode

from allauth.account.adapter import DefaultAccountAdapter
from allauth.account.models import EmailAddress
from allauth.core.exceptions import ImmediateHttpResponse
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from allauth.socialaccount.providers.base import AuthProcess
from django.db.models import Q
from django.http import HttpResponseRedirect
from django.urls import reverse

from apps.tenants.context import tenant_context_for_request
from apps.tenants.models import CONSUMER_GOOGLE_DOMAINS, Domain, Invitation, Role, User
from apps.tenants.selectors import (
    GoogleIdentity,
    is_operator_email,
    memberships_for_user,
    signin_entitlements,
)
from apps.tenants.services import memberships_join_for_identity

logger = logging.getLogger(__name__)


def user_display(user: User) -> str:
    """How allauth's messages name a person (``ACCOUNT_USER_DISPLAY``): the name Google gave,
    else the address; the generated username means nothing to them."""
    return user.get_full_name() or user.email or user.get_username()


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request) -> bool:
        """Local sign-up is closed: the operator is created with createsuperuser."""
        return False

    def get_login_redirect_url(self, request) -> str:
        """After sign-in, whoever administers or audits goes to the admin (its onboarding
        checklist, the grants); a plain member goes to their profiles on the home page.

        Only used when the sign-in carried no ``next``; the home page still shows auditors
        and up the member view when they come back to it.
        """
        if tenant_context_for_request(request).has_role(Role.AUDITOR):
            return reverse("admin:index")
        return super().get_login_redirect_url(request)

    def get_signup_redirect_url(self, request) -> str:
        """A first Google sign-in is a sign-up to allauth: it lands where a sign-in would."""
        return self.get_login_redirect_url(request)

    def send_mail(self, template_prefix: str, email: str, context: dict) -> None:
        """Account mail may go to the platform operator only; a member's account is Google's.

        Ephemera serves none of allauth's pages that send mail (portal/urls.py); this still
        holds should an allauth upgrade start mailing from another one.
        """
        if not is_operator_email(email=email):
            logger.warning("account_mail_refused", extra={"template": template_prefix})
            return
        super().send_mail(template_prefix, email, context)


# --- linking a Google account to an existing user ------------------------------------------

# Why a Google account was not linked to the existing user with its address; each has its
# explanation on the sign-in refused page (apps/tenants/account_views.py).
UNVERIFIED = "unverified"
AMBIGUOUS = "ambiguous"
OPERATOR = "operator"
INACTIVE = "inactive"
NOT_AUTHORITATIVE = "not_authoritative"
NOT_VOUCHED = "not_vouched"
CONNECT_NOT_OFFERED = "connect"


@dataclass(frozen=True)
class LinkDecision:
    """What to do with a Google account no user is linked to yet.

    ``user`` set: link it to that user. ``refusal`` set: refuse. Neither: nobody holds the
    address, so it is a new person, admitted or not by their organisation's rules.
    """

    user: User | None = None
    refusal: str | None = None


def users_with_email(*, email: str) -> list[User]:
    """Every user holding this address, on the user row or among allauth's addresses: the
    same users allauth counts when it decides an address is taken."""
    if not email:
        return []
    listed = EmailAddress.objects.filter(email__iexact=email).values("user_id")
    return list(User.objects.filter(Q(email__iexact=email) | Q(pk__in=listed)).order_by("pk"))


def google_is_authoritative(identity: GoogleIdentity) -> bool:
    """Whether Google, not just once but now, answers for who holds the address.

    Google's own rule (OpenID Connect guide, "An ID token's payload"): a Gmail address, or a
    verified address with ``hd`` (a Workspace account, whose domain Google verified). Any
    other Google account was only checked against the mailbox when it was made; whoever held
    the mailbox then may not hold it now.
    """
    if not identity.email_verified or not identity.email:
        return False
    domain = identity.email.rpartition("@")[2]
    return identity.hosted_domain is not None or domain in CONSUMER_GOOGLE_DOMAINS


def _vouched_for(*, user: User, identity: GoogleIdentity) -> bool:
    """Whether an organisation vouches, now, for this Google account being that user: an open
    invitation to the exact address, or ``hd`` a verified domain of an organisation the user
    already belongs to.

    For a Workspace address an invitation vouches only from an organisation the user already
    belongs to, or for a user who belongs to none: a Workspace domain can change hands, and
    otherwise any owner anywhere could, by inviting an address, hand whoever holds that
    mailbox now the roles the user holds elsewhere. A Gmail address is never given to
    another person, so any open invitation to it vouches.
    """
    invitations = Invitation.objects.pending().filter(
        email__iexact=identity.email, organization__is_active=True
    )
    if identity.hosted_domain is not None and user.memberships.exists():
        invitations = invitations.filter(organization__memberships__user=user)
    if invitations.exists():
        return True
    if identity.hosted_domain is None:
        return False
    return Domain.objects.filter(
        name=identity.hosted_domain,
        is_verified=True,
        organization__is_active=True,
        organization__memberships__user=user,
    ).exists()


def google_link_decision(*, identity: GoogleIdentity) -> LinkDecision:
    """The linking rule, for a Google account (a ``sub``) that no user is linked to yet.

    Linked to the existing user with the same address only if all hold: Google verified the
    address and is authoritative for it; exactly one user holds it, active and not the
    operator; an organisation vouches for it now (``_vouched_for``). Otherwise refused: never
    a second user with the same address, never allauth's sign-up form.
    """
    users = users_with_email(email=identity.email)
    if not users:
        return LinkDecision()
    if not identity.email_verified:
        return LinkDecision(refusal=UNVERIFIED)
    if len(users) > 1:
        return LinkDecision(refusal=AMBIGUOUS)
    user = users[0]
    if user.is_superuser or user.is_staff:
        return LinkDecision(refusal=OPERATOR)
    if not user.is_active:
        return LinkDecision(refusal=INACTIVE)
    if not google_is_authoritative(identity):
        return LinkDecision(refusal=NOT_AUTHORITATIVE)
    if not _vouched_for(user=user, identity=identity):
        return LinkDecision(refusal=NOT_VOUCHED)
    return LinkDecision(user=user)


def _refuse(reason: str) -> ImmediateHttpResponse:
    url = f"{reverse('no_organization')}?{urlencode({'reason': reason})}"
    return ImmediateHttpResponse(HttpResponseRedirect(url))


def _refuse_link(reason: str) -> ImmediateHttpResponse:
    url = f"{reverse('sign_in_refused')}?{urlencode({'reason': reason})}"
    return ImmediateHttpResponse(HttpResponseRedirect(url))


def _fill_names(user: User, *, claims: dict) -> None:
    """Give a user Google's name where theirs is blank (the admin greets by first name);
    a name someone set is never overwritten."""
    given, _, family = str(claims.get("name") or "").partition(" ")
    first_name = str(claims.get("given_name") or given).strip()
    last_name = str(claims.get("family_name") or family).strip()
    changed = []
    if first_name and not user.first_name:
        user.first_name = first_name[: User._meta.get_field("first_name").max_length]
        changed.append("first_name")
    if last_name and not user.last_name:
        user.last_name = last_name[: User._meta.get_field("last_name").max_length]
        changed.append("last_name")
    if changed:
        user.save(update_fields=changed)


class GoogleSocialAccountAdapter(DefaultSocialAccountAdapter):
    """Enforces the sign-in rules (README, "Sign-in and organisations") before allauth
    creates or logs in anyone.

    Refusals happen here, before any user row is written, so a stranger leaves no trace.
    """

    def pre_social_login(self, request, sociallogin) -> None:
        if sociallogin.state.get("process") == AuthProcess.CONNECT:
            # Adding a Google account to a signed-in user would sidestep the linking rule.
            raise _refuse_link(CONNECT_NOT_OFFERED)
        identity = GoogleIdentity.from_claims(sociallogin.account.extra_data)
        if not identity.email_verified:
            raise _refuse(UNVERIFIED)
        if sociallogin.is_existing:
            user, link = sociallogin.user, False
        else:
            decision = google_link_decision(identity=identity)
            if decision.refusal is not None:
                raise _refuse_link(decision.refusal)
            user, link = decision.user, decision.user is not None
        has_membership = user is not None and memberships_for_user(user=user).exists()
        if not signin_entitlements(identity=identity) and not has_membership:
            raise _refuse("no_organization")
        if user is None:
            return  # a new person: allauth signs them up (save_user)
        if link:
            sociallogin.connect(request, user)
            logger.info("google_identity_linked", extra={"user_id": user.pk})
        _fill_names(user, claims=sociallogin.account.extra_data)
        memberships_join_for_identity(user=user, identity=identity)

    def on_authentication_error(
        self, request, provider, error=None, exception=None, extra_context=None
    ) -> None:
        """A person who said no at Google sees "cancelled", even when the answer came back
        without our ``state`` (allauth would call that a failure); anything else is logged
        for the operator and shown as the portal's failure page."""
        if request.GET.get("error") == "access_denied":
            raise ImmediateHttpResponse(
                HttpResponseRedirect(reverse("socialaccount_login_cancelled"))
            )
        logger.warning(
            "google_sign_in_failed",
            extra={
                "error": str(error),
                "provider_error": request.GET.get("error", "")[:64],
                "exception": type(exception).__name__ if exception else "",
            },
        )

    def is_open_for_signup(self, request, sociallogin) -> bool:
        return True  # pre_social_login has already refused anyone without an organisation

    def save_user(self, request, sociallogin, form=None):
        user = super().save_user(request, sociallogin, form)
        identity = GoogleIdentity.from_claims(sociallogin.account.extra_data)
        memberships_join_for_identity(user=user, identity=identity)
        return user
