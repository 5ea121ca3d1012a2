"""Settings come from the environment; production must pass Django's deploy checks."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

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


def test_production_settings_pass_check_deploy_without_warnings(tmp_path):
    production = {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "ephemera.example.com",
        "GOOGLE_OAUTH_CLIENT_ID": "client-id.apps.googleusercontent.com",
        "GOOGLE_OAUTH_CLIENT_SECRET": secrets.token_urlsafe(24),
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "AUDIT_HMAC_KEY": secrets.token_urlsafe(32),
    }

    result = run_manage(
        "check", "--deploy", "--fail-level", "WARNING", env=production, tmp_path=tmp_path
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


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
