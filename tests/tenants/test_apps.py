"""The Sites row allauth names in its pages is the portal's, never Django's "example.com"."""

import pytest
from django.contrib.sites.models import Site
from django.core.management import call_command

from apps.tenants.apps import PORTAL_SITE_NAME, portal_domain, portal_site_sync

pytestmark = pytest.mark.django_db


def test_after_migrate_the_site_is_the_portals(settings):
    site = Site.objects.get_current()

    assert (site.domain, site.name) == (portal_domain(), PORTAL_SITE_NAME)
    assert site.domain != "example.com"


def test_the_domain_comes_from_portal_url(settings):
    settings.PORTAL_URL = "https://ephemera.example.org"

    portal_site_sync()

    assert Site.objects.get_current().domain == "ephemera.example.org"


@pytest.mark.parametrize(
    ("portal_url", "allowed_hosts", "domain"),
    [
        ("http://127.0.0.1:8000", ["*"], "127.0.0.1:8000"),
        ("", [".example.org", "ephemera.example.org"], "ephemera.example.org"),
        ("", ["*"], "localhost"),
    ],
)
def test_without_portal_url_the_first_named_host_is_used(
    settings, portal_url, allowed_hosts, domain
):
    settings.PORTAL_URL, settings.ALLOWED_HOSTS = portal_url, allowed_hosts

    assert portal_domain() == domain


@pytest.mark.django_db(transaction=True)
def test_a_migrate_puts_a_changed_portal_url_into_the_site(settings):
    settings.PORTAL_URL = "https://moved.example.org"

    call_command("migrate", verbosity=0)

    assert Site.objects.get_current().domain == "moved.example.org"
