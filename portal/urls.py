from django.contrib import admin
from django.urls import include, path

from apps.issuance.api import api
from apps.tenants import views as tenant_views
from portal import views
from portal.metrics import metrics_view

urlpatterns = [
    path("", tenant_views.home, name="home"),
    path("no-organisation/", tenant_views.no_organization, name="no_organization"),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    # Also answered ahead of host checks by portal.middleware.ProbeMiddleware.
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
]
