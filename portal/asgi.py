import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")


def build_application():
    """Django's ASGI application, with client-key token requests taken by the short path."""
    django_application = get_asgi_application()  # sets Django up, which the import needs
    from apps.issuance.asgi import TokenEndpointHandler

    return TokenEndpointHandler(django_application)


application = build_application()

# What is loaded by now (Django, every app, their modules and URL patterns) lives as long as
# the process: frozen, the cycle collector's full collections stop walking it with the event
# loop held (docs/adr/0006-gc-freeze-after-startup.md).
gc.freeze()
