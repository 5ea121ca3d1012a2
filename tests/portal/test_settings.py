"""Settings come from the environment; production must pass Django's deploy checks."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]


def run_manage(*args: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    clean_env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "EPHEMERA_VAR_DIR": str(tmp_path / "var"),
        **env,
    }
    return subprocess.run(  # noqa: S603
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=clean_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_secret_key_is_required_unless_debug(tmp_path):
    refused = run_manage("check", env={}, tmp_path=tmp_path)
    allowed = run_manage("check", env={"DEBUG": "1"}, tmp_path=tmp_path)

    assert refused.returncode != 0
    assert "SECRET_KEY must be set unless DEBUG=1" in refused.stderr
    assert allowed.returncode == 0, allowed.stderr


def production_env() -> dict[str, str]:
    """What deploy/env.example asks for, filled in (nothing is connected to)."""
    return {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DEBUG": "0",
        "ALLOWED_HOSTS": "ephemera.example.com",
        "CSRF_TRUSTED_ORIGINS": "https://ephemera.example.com",
        "DATABASE_URL": "postgres://ephemera:pw@postgres:5432/ephemera",
        "REDIS_URL": "redis://redis:6379/0",
        "GOOGLE_OAUTH_CLIENT_ID": "client-id.apps.googleusercontent.com",
        "GOOGLE_OAUTH_CLIENT_SECRET": secrets.token_urlsafe(24),
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "AUDIT_HMAC_KEY": secrets.token_urlsafe(32),
        "SECURE_PROXY_SSL_HEADER": "1",
    }


def test_production_settings_pass_check_deploy_without_warnings(tmp_path):
    result = run_manage(
        "check", "--deploy", "--fail-level", "WARNING", env=production_env(), tmp_path=tmp_path
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_settings_are_hardened(tmp_path):
    code = (
        "import json, django; django.setup(); from django.conf import settings as s;"
        "print(json.dumps({name: getattr(s, name) for name in ["
        "'SESSION_COOKIE_SECURE', 'SESSION_COOKIE_HTTPONLY', 'SESSION_COOKIE_SAMESITE',"
        "'CSRF_COOKIE_SECURE', 'CSRF_COOKIE_HTTPONLY', 'CSRF_COOKIE_SAMESITE',"
        "'SECURE_SSL_REDIRECT', 'SECURE_REDIRECT_EXEMPT', 'SECURE_HSTS_SECONDS',"
        "'SECURE_CONTENT_TYPE_NOSNIFF', 'SECURE_REFERRER_POLICY', 'X_FRAME_OPTIONS',"
        "'SECURE_CROSS_ORIGIN_OPENER_POLICY', 'SECURE_CSP', 'ACCOUNT_RATE_LIMITS',"
        "'DATA_UPLOAD_MAX_MEMORY_SIZE', 'MIDDLEWARE']}))"
    )
    env = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "EPHEMERA_VAR_DIR": str(tmp_path / "var"),
        **production_env(),
    }

    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["SESSION_COOKIE_SECURE"] and got["SESSION_COOKIE_HTTPONLY"]
    assert got["CSRF_COOKIE_SECURE"] and got["CSRF_COOKIE_HTTPONLY"]
    assert got["SESSION_COOKIE_SAMESITE"] == got["CSRF_COOKIE_SAMESITE"] == "Lax"
    assert got["SECURE_SSL_REDIRECT"] and got["SECURE_HSTS_SECONDS"] >= 31536000
    assert got["SECURE_REDIRECT_EXEMPT"] == ["^healthz$", "^readyz$", "^metrics$"]
    assert got["SECURE_CONTENT_TYPE_NOSNIFF"]
    assert got["SECURE_REFERRER_POLICY"] == "same-origin"
    assert got["X_FRAME_OPTIONS"] == "DENY"
    assert got["SECURE_CROSS_ORIGIN_OPENER_POLICY"] == "same-origin"
    assert got["SECURE_CSP"]["form-action"] == ["'self'", "https://accounts.google.com"]
    assert "'unsafe-inline'" not in json.dumps(got["SECURE_CSP"])
    assert got["ACCOUNT_RATE_LIMITS"]["login"] == "30/m/ip"
    assert got["ACCOUNT_RATE_LIMITS"]["login_failed"] == "10/m/ip,5/5m/key"
    assert got["DATA_UPLOAD_MAX_MEMORY_SIZE"] == 256 * 1024
    assert "portal.middleware.ContentSecurityPolicyMiddleware" in got["MIDDLEWARE"]
    # probes are answered after the HTTPS redirect's exemption, before host validation
    middleware = got["MIDDLEWARE"]
    assert (
        middleware.index("django.middleware.security.SecurityMiddleware")
        < middleware.index("portal.middleware.ProbeMiddleware")
        < middleware.index("django.middleware.common.CommonMiddleware")
    )


def test_deploy_check_refuses_placeholder_and_malformed_secrets(tmp_path):
    placeholders = {
        **production_env(),
        "SECRET_KEY": "change-me",
        "FIELD_ENCRYPTION_KEYS": "change-me",
        "AUDIT_HMAC_KEY": "change-me",
    }

    result = run_manage(
        "check", "--deploy", "--fail-level", "WARNING", env=placeholders, tmp_path=tmp_path
    )

    assert result.returncode != 0
    assert "security.W009" in result.stderr  # Django's own: a weak SECRET_KEY
    assert "ephemera.E003" in result.stderr  # not a Fernet key
    assert "ephemera.W003" in result.stderr  # a short AUDIT_HMAC_KEY


def test_deploy_check_flags_a_fake_google(tmp_path):
    risky = {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "ephemera.example.com",
        "GOOGLE_OAUTH_MOCK_URL": "http://localhost:9999",
    }

    result = run_manage(
        "check", "--deploy", "--fail-level", "WARNING", env=risky, tmp_path=tmp_path
    )

    assert result.returncode != 0
    assert "ephemera.W001" in result.stderr
    assert "ephemera.W002" in result.stderr
    assert "ephemera.E001" in result.stderr  # no FIELD_ENCRYPTION_KEYS
    assert "ephemera.E002" in result.stderr  # no AUDIT_HMAC_KEY


def test_embedded_default_uses_sqlite_with_wal_and_immediate_transactions(tmp_path):
    code = (
        "import django; django.setup();"
        "from django.conf import settings; from django.db import connection;"
        "db = settings.DATABASES['default'];"
        "print(db['ENGINE'], db['OPTIONS']['transaction_mode'], settings.CELERY_BROKER_URL);"
        "connection.ensure_connection();"
        "print(connection.cursor().execute('PRAGMA journal_mode').fetchone()[0])"
    )
    env = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DEBUG": "1",
        "EPHEMERA_VAR_DIR": str(tmp_path / "var"),
    }

    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.sqlite3",
        "IMMEDIATE",
        "filesystem://",
        "wal",
    ]
    assert (tmp_path / "var" / "celery" / "queue").is_dir()  # the broker's folders exist


ISSUANCE_THREADS = (
    "from apps.issuance.store.threaded import _db_threads; print(_db_threads._max_workers)"
)


@pytest.mark.parametrize(
    ("database_url", "setting", "threads"),
    [
        ("", "6", "1"),  # SQLite: one writer at a time, whatever the setting says
        ("postgres://ephemera@127.0.0.1:5432/ephemera", None, "2"),
        ("postgres://ephemera@127.0.0.1:5432/ephemera", "5", "5"),
    ],
)
def test_issuance_database_threads_follow_the_setting_on_postgresql_only(
    tmp_path, database_url, setting, threads
):
    env = {"DEBUG": "1", "DATABASE_URL": database_url}
    if setting is not None:
        env["ISSUANCE_DB_THREADS"] = setting
    result = run_manage("shell", "-c", ISSUANCE_THREADS, env=env, tmp_path=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == threads
