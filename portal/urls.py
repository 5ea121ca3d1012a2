from allauth.account import views as allauth_views
from django.contrib import admin
from django.urls import include, path, re_path

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
        unavailable_without_cache(allauth_views.reauthenticate),
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
]

urlpatterns = [
    path("", tenant_views.home, name="home"),
    path("no-organisation/", tenant_views.no_organization, name="no_organization"),
    path("accounts/", include(account_overrides)),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    # Also answered ahead of host checks by portal.middleware.ProbeMiddleware.
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
]
