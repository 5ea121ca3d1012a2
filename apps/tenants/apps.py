from urllib.parse import urlsplit

from django.apps import AppConfig
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS
from django.db.models.signals import post_migrate

PORTAL_SITE_NAME = "Ephemera"


class TenantsConfig(AppConfig):
    name = "apps.tenants"
    verbose_name = "Tenancy"

    def ready(self) -> None:
        post_migrate.connect(_site_after_migrate, sender=self)


def portal_domain() -> str:
    """The portal's host name (and port), as people reach it.

    From ``PORTAL_URL``; unset, the first host ``ALLOWED_HOSTS`` names outright (a wildcard
    or a leading-dot suffix names no one host), else ``localhost``.
    """
    if settings.PORTAL_URL:
        return urlsplit(settings.PORTAL_URL).netloc
    for host in settings.ALLOWED_HOSTS:
        if host != "*" and not host.startswith("."):
            return host
    return "localhost"


def portal_site_sync(*, using: str = DEFAULT_DB_ALIAS, site_model=None):
    """Make the Sites row allauth names in its pages and messages the portal's own.

    Django creates it as "example.com"; allauth shows that to people ("sign in to
    example.com"). Run after every migrate (and the test database's flushes), so a changed
    ``PORTAL_URL`` takes effect on the next deploy.
    """
    from django.contrib.sites.models import Site

    site, _ = (
        (site_model or Site)
        .objects.using(using)
        .update_or_create(
            pk=settings.SITE_ID, defaults={"domain": portal_domain(), "name": PORTAL_SITE_NAME}
        )
    )
    Site.objects.clear_cache()
    return site


def _site_after_migrate(sender, using: str = DEFAULT_DB_ALIAS, apps=None, **kwargs) -> None:
    """After ``django.contrib.sites`` made its "example.com" row (it migrates first)."""
    try:
        site_model = apps.get_model("sites", "Site") if apps is not None else None
    except LookupError:  # a partial migrate that has not reached the sites app yet
        return
    portal_site_sync(using=using, site_model=site_model)
