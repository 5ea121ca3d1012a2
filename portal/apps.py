from pathlib import Path

from django.apps import AppConfig
from django.conf import settings
from django.contrib.admin import apps as admin_apps


class TenantAdminConfig(admin_apps.AdminConfig):
    """Replace Django's default admin site with the tenant-aware one everywhere."""

    default = False
    default_site = "apps.tenants.admin_site.TenantAdminSite"


class PortalConfig(AppConfig):
    default = True
    name = "portal"
    verbose_name = "Ephemera portal"

    def ready(self) -> None:
        from portal import checks  # noqa: F401  (registers system checks)

        # The embedded default keeps its database, cache and Celery queue under var/.
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        if settings.CELERY_BROKER_URL == "filesystem://":
            for folder in (
                "data_folder_in",
                "data_folder_out",
                "processed_folder",
                "control_folder",
            ):
                path = settings.CELERY_BROKER_TRANSPORT_OPTIONS[folder]
                Path(path).mkdir(parents=True, exist_ok=True)
            (settings.CELERY_FS_DIR / "results").mkdir(parents=True, exist_ok=True)
        _sqlite_use_wal()


def _sqlite_use_wal() -> None:
    """Put the embedded SQLite file in WAL mode once per process, not on every connection."""
    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.sqlite3":
        return
    name = str(database["NAME"])
    if name == ":memory:" or name.startswith("file:"):
        return
    import sqlite3

    with sqlite3.connect(name, timeout=20) as raw:
        raw.execute("PRAGMA journal_mode=WAL")
    raw.close()
