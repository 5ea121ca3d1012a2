"""Test settings: the production settings module, pointed at throwaway places and a fake Google.

DATABASE_URL and REDIS_URL pass through, so the same suite runs on SQLite with no servers
and on PostgreSQL + Redis in CI.
"""

import os
import socket
import tempfile
import uuid

from cryptography.fernet import Fernet


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


os.environ.setdefault("SECRET_KEY", "test-" + uuid.uuid4().hex)
os.environ.setdefault("EPHEMERA_VAR_DIR", tempfile.mkdtemp(prefix="ephemera-test-"))
# allauth reads Google's endpoint URLs at import, so the fake's port is fixed here and the
# `oidc_server` fixture starts oidc-provider-mock on it.
OIDC_MOCK_PORT = int(os.environ.get("EPHEMERA_TEST_OIDC_PORT") or _free_port())
os.environ["GOOGLE_OAUTH_MOCK_URL"] = f"http://localhost:{OIDC_MOCK_PORT}"
os.environ.setdefault("GOOGLE_OAUTH_CLIENT_ID", "ephemera-test-client")
os.environ.setdefault("GOOGLE_OAUTH_CLIENT_SECRET", "ephemera-test-secret")

from portal.settings import *  # noqa: E402, F403
from portal.settings import CACHES, REDIS_URL  # noqa: E402

ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed only
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # noqa: F405
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
if REDIS_URL:
    CACHES["default"]["KEY_PREFIX"] = f"test-{uuid.uuid4().hex[:8]}"
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Fresh per run, so no key material lives in the repository.
FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
AUDIT_HMAC_KEY = uuid.uuid4().hex

# A file, not SQLite's shared in-memory database: the concurrency tests run a real server
# thread beside the test, and only a file gets WAL, IMMEDIATE transactions and busy waits.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}  # noqa: F405
