from allauth.account import views as allauth_views
from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path, re_path
from django.utils.functional import lazy
from django.views.generic import RedirectView

from apps.issuance.api import api
from apps.tenants import account_views
from apps.tenants import views as tenant_views
from portal import views
from portal.metrics import metrics_view

unavailable_without_cache = account_views.unavailable_while_cache_is_down
not_offered = account_views.not_offered

# Ahead of allauth's own URLs, under allauth's names (its pages and redirects use them): its
# password pages, refusing with a 503 while their rate limits are out of reach, and its
# local-account pages that Ephemera does not offer (apps/tenants/account_views.py says why).
account_overrides = [
    path("login/", unavailable_without_cache(allauth_views.login), name="account_login"),
    path(
        "reauthenticate/",
        unavailable_without_cache(account_views.for_password_holders(allauth_views.reauthenticate)),
        name="account_reauthenticate",
    ),
    path(
        "password/change/",
        unavailable_without_cache(allauth_views.password_change),
        name="account_change_password",
    ),
    path("signup/", not_offered, name="account_signup"),
    path("password/set/", not_offered, name="account_set_password"),
    path("password/reset/", not_offered, name="account_reset_password"),
    path("password/reset/done/", not_offered, name="account_reset_password_done"),
    re_path(
        r"^password/reset/key/(?P<uidb36>[0-9A-Za-z]+)-(?P<key>.+)/$",
        not_offered,
        name="account_reset_password_from_key",
    ),
    path("password/reset/key/done/", not_offered, name="account_reset_password_from_key_done"),
    path("email/", not_offered, name="account_email"),
    path("confirm-email/", not_offered, name="account_email_verification_sent"),
    re_path(r"^confirm-email/(?P<key>[-:\w]+)/$", not_offered, name="account_confirm_email"),
    # A Google account is linked to a user by the adapter's rule or refused, never through
    # allauth's third-party sign-up form or its page for adding accounts (apps/tenants/adapters.py).
    path("3rdparty/signup/", not_offered, name="socialaccount_signup"),
    path("3rdparty/", not_offered, name="socialaccount_connections"),
    path("refused/", account_views.sign_in_refused, name="sign_in_refused"),
]

urlpatterns = [
    path("", tenant_views.home, name="home"),
    path("no-organisation/", tenant_views.no_organization, name="no_organization"),
    path(
        "profiles/<slug:slug>/guide/",
        tenant_views.profile_guide_page,
        name="member_profile_guide",
    ),
    path("accounts/", include(account_overrides)),
    path("accounts/", include("allauth.urls")),
    # The admin's "Log out" signs out as the site's "Sign out" does: back to the sign-in page
    # with allauth's "You have signed out." (Django's own ends on a page of its own).
    path("admin/logout/", allauth_views.logout),
    path("admin/", admin.site.urls),
    # Browsers ask every site for /favicon.ico; the portal's icon is an SVG among its statics.
    path("favicon.ico", RedirectView.as_view(url=lazy(static, str)("ephemera/favicon.svg"))),
    path("api/v1/", api.urls),
    # Also answered ahead of host checks by portal.middleware.ProbeMiddleware.
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
]
