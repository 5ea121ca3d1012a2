"""The served ASGI application."""

import os
import subprocess
import sys

from django.conf import settings


def test_the_served_application_freezes_what_startup_loaded():
    """Startup's objects are frozen out of the cycle collector's full collections."""
    probe = "import gc, portal.asgi; print(gc.get_freeze_count())"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    result = subprocess.run(  # noqa: S603 (this interpreter, a fixed snippet)
        [sys.executable, "-c", probe],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(result.stdout.split()[-1]) > 50_000
