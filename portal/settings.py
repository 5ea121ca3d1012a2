"""Ephemera settings: everything that differs between machines comes from the environment.

The defaults are the embedded setup (README, "Two commands": SQLite and a filesystem Celery broker
under ``var/``); production sets ``DATABASE_URL``, ``REDIS_URL`` and ``SECRET_KEY``.
"""

import ipaddress
from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

from portal.env import env_bool, env_int, env_list, env_str
from portal.mail import parse_email_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("EPHEMERA_VAR_DIR") or BASE_DIR / "var")

DEBUG = env_bool("DEBUG", default=False)

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set unless DEBUG=1.")
    SECRET_KEY = "insecure-debug-only-key-never-used-in-production"  # noqa: S105

ALLOWED_HOSTS = env_list(
    "ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else []
)
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "portal.apps.TenantAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.contrib.sites",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.google",
    "ninja",  # serves its Swagger UI from our static files, not a CDN
    "portal",
    "apps.tenants",
    "apps.audit",
    "apps.policies",
    "apps.clients",
    "apps.issuance",
]

# Django's own middleware, and the portal's (sync and async alike). Client apps' token
# requests take a short path with only what shapes their answer (apps/issuance/asgi.py).
MIDDLEWARE = [
    "portal.middleware.RequestIdMiddleware",
    "portal.middleware.AccessLogMiddleware",
    "portal.middleware.ApiErrorShapeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "portal.middleware.ContentSecurityPolicyMiddleware",
    "portal.middleware.ProbeMiddleware",
    "portal.middleware.StaticFilesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "apps.tenants.middleware.TenantContextMiddleware",
    "portal.middleware.ApiCorsMiddleware",
]

ROOT_URLCONF = "portal.urls"
ASGI_APPLICATION = "portal.asgi.application"
WSGI_APPLICATION = "portal.wsgi.application"
SITE_ID = 1

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.context_processors.sandbox_banner",
            ],
        },
    },
]

# --- Database ------------------------------------------------------------------------------

DATABASE_URL = env_str("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'ephemera.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_health_checks=True)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat write concurrently: WAL lets readers proceed, IMMEDIATE takes the
    # write lock at BEGIN so two writers queue on the busy timeout instead of deadlocking.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        # WAL is a property of the file (set once by PortalConfig.ready); this is per connection.
        "init_command": "PRAGMA synchronous=NORMAL;",
    }
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Under ASGI every request's sync work gets its own thread, and so its own connection: a
    # pool caps them (PostgreSQL allows 100 by default); a request waits for a free one.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # Django's backend, checking pooled connections itself, skipping those handed back
    # healthy moments ago (Django's own check costs a round trip per checkout).
    DATABASES["default"]["ENGINE"] = "portal.db_backends.postgresql"
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
    DATABASES["default"]["OPTIONS"] = {
        "pool": {
            "min_size": 2,
            "max_size": env_int("DATABASE_POOL_SIZE", 20),
            "timeout": 10,
        },
        # Lets issuance's preparing cursors (apps/issuance/store/connections.py) prepare its
        # few per-request statements (Django turns preparing off by default); the ORM's
        # client-side cursors never prepare.
        "prepare_threshold": 5,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache and Celery ----------------------------------------------------------------------

REDIS_URL = env_str("REDIS_URL")
CELERY_FS_DIR = VAR_DIR / "celery"

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # A Redis that accepts and never answers costs a request 2 s, as on the quota
            # path, before the caller's fallback (CORS preflights) or refusal (sign-in) runs;
            # redis-py's default would wait 5 s on every cache call.
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
    CELERY_BROKER_URL = REDIS_URL
    CELERY_RESULT_BACKEND = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS: dict = {}
else:
    # A file cache is shared by the web process, the worker and beat without any server.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }
    CELERY_BROKER_URL = "filesystem://"
    CELERY_RESULT_BACKEND = f"file://{CELERY_FS_DIR / 'results'}"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_FS_DIR / "queue"),
        "data_folder_out": str(CELERY_FS_DIR / "queue"),
        "processed_folder": str(CELERY_FS_DIR / "processed"),
        "control_folder": str(CELERY_FS_DIR / "control"),
        "store_processed": False,
    }

CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_RESULT_EXPIRES = 3600
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE: dict = {
    "heartbeat": {"task": "portal.tasks.heartbeat", "schedule": 60.0},
    # The audit trail's upkeep (docs/architecture.md). Each task is idempotent, so a missed or
    # doubled beat only delays or repeats work, never corrupts it.
    # The first two are apps/issuance/tasks.py's; it says why their names stay "audit.".
    "expire-grants": {"task": "audit.expire_grants", "schedule": 60.0},
    "reap-pending": {"task": "audit.reap_pending", "schedule": 60.0},
    "seal-audit": {"task": "audit.seal_audit", "schedule": 60.0},
    # Every minute under DEBUG, so `make dev`'s dashboard shows a new token soon.
    "rollup-usage": {"task": "audit.rollup_usage", "schedule": 60.0 if DEBUG else 300.0},
    "purge-grants": {"task": "audit.purge_grants", "schedule": crontab(hour=3, minute=17)},
}
# Rows per statement for the audit tasks: small enough that no statement holds a long lock.
AUDIT_BATCH_SIZE = env_int("AUDIT_BATCH_SIZE", 2000)
# Records per seal, and how long a record must be settled (no longer PENDING, and older than
# this) before it is sealed or counted: a transaction still in flight must not be skipped.
AUDIT_SEAL_BATCH_SIZE = env_int("AUDIT_SEAL_BATCH_SIZE", 5000)
AUDIT_SETTLE_SECONDS = env_int("AUDIT_SETTLE_SECONDS", 60)
# Task runs (CleanupRun rows) older than this are removed by purge_grants.
AUDIT_TASK_RUN_RETENTION_DAYS = env_int("AUDIT_TASK_RUN_RETENTION_DAYS", 90)

# --- Authentication ------------------------------------------------------------------------

AUTH_USER_MODEL = "tenants.User"
# The only password backend; Google sign-in does not authenticate through backends.
AUTHENTICATION_BACKENDS = ["apps.tenants.auth_backends.OperatorPasswordBackend"]
# Members sign in with Google; only the operator (and the seeded demo under `dev`) use passwords.
MEMBER_PASSWORD_LOGIN = env_bool("MEMBER_PASSWORD_LOGIN", default=DEBUG)

LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "home"
ACCOUNT_LOGOUT_REDIRECT_URL = "account_login"

ACCOUNT_ADAPTER = "apps.tenants.adapters.AccountAdapter"
SOCIALACCOUNT_ADAPTER = "apps.tenants.adapters.GoogleSocialAccountAdapter"
ACCOUNT_LOGIN_METHODS = {"username"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "username*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "none"
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_LOGOUT_ON_GET = False
# allauth's messages name people by Google's name or their address, not the generated username.
ACCOUNT_USER_DISPLAY = "apps.tenants.adapters.user_display"
SOCIALACCOUNT_AUTO_SIGNUP = True
SOCIALACCOUNT_QUERY_EMAIL = True
SOCIALACCOUNT_LOGIN_ON_GET = False
# A Google account reaches an existing user with its address only under the adapter's linking
# rule (docs/adr/0017-linking-google-identities.md); allauth's own e-mail authentication
# would trust any verified address, the operator's included.
SOCIALACCOUNT_EMAIL_AUTHENTICATION = False
SOCIALACCOUNT_EMAIL_AUTHENTICATION_AUTO_CONNECT = False
SOCIALACCOUNT_STORE_TOKENS = False
SOCIALACCOUNT_ONLY = False
# allauth's own limits, kept in the cache (Redis in production), stated rather than inherited.
# They count per client address: behind a proxy, uvicorn's --forwarded-allow-ips must trust it
# so REMOTE_ADDR is the browser's, not the proxy's (deploy/OPERATOR.md). While the cache is out
# of reach, the password pages answer 503 rather than run without them (portal/urls.py); the
# sign-up and password-reset pages are not served at all.
ACCOUNT_RATE_LIMITS = {
    "login": "30/m/ip",
    "login_failed": "10/m/ip,5/5m/key",
    "signup": "20/m/ip",
    "reset_password": "20/m/ip,5/m/key",
    "reset_password_from_key": "20/m/ip",
    "change_password": "5/m/user",
    "reauthenticate": "10/m/user",
    "manage_email": "10/m/user",
}

GOOGLE_OAUTH_CLIENT_ID = env_str("GOOGLE_OAUTH_CLIENT_ID")
GOOGLE_OAUTH_CLIENT_SECRET = env_str("GOOGLE_OAUTH_CLIENT_SECRET")
# Tests and offline demos point Google sign-in at a local oidc-provider-mock; never in production.
GOOGLE_OAUTH_MOCK_URL = env_str("GOOGLE_OAUTH_MOCK_URL").rstrip("/")

_google: dict = {
    "APP": {
        "client_id": GOOGLE_OAUTH_CLIENT_ID or "unconfigured",
        "secret": GOOGLE_OAUTH_CLIENT_SECRET,
        "key": "",
    },
    "SCOPE": ["openid", "profile", "email"],
    "AUTH_PARAMS": {"prompt": "select_account"},
    "OAUTH_PKCE_ENABLED": True,
}
if GOOGLE_OAUTH_MOCK_URL:
    _google.update(
        AUTHORIZE_URL=f"{GOOGLE_OAUTH_MOCK_URL}/oauth2/authorize",
        ACCESS_TOKEN_URL=f"{GOOGLE_OAUTH_MOCK_URL}/oauth2/token",
        IDENTITY_URL=f"{GOOGLE_OAUTH_MOCK_URL}/userinfo",
        ID_TOKEN_ISSUER=GOOGLE_OAUTH_MOCK_URL,
    )
SOCIALACCOUNT_PROVIDERS = {"google": _google}
# Where "Check DNS now" looks up a domain claim's TXT record: empty is the system resolver
# (/etc/resolv.conf); else a comma list of `host` or `host:port` (apps/tenants/domain_dns.py).
DNS_RESOLVER_NAMESERVERS = env_list("DNS_RESOLVER_NAMESERVERS")

# --- Secrets and Gemini ------------------------------------------------------------------

FIELD_ENCRYPTION_KEYS = env_list("FIELD_ENCRYPTION_KEYS")
AUDIT_HMAC_KEY = env_str("AUDIT_HMAC_KEY")
GEMINI_API_KEY = env_str("GEMINI_API_KEY")
GEMINI_BASE_URL = env_str("GEMINI_BASE_URL")
GEMINI_TIMEOUT_MS = env_int("GEMINI_TIMEOUT_MS", 10_000)
# Threads per web process for issuance's database steps on PostgreSQL (SQLite: always one).
# Each waits out its round trips, so a distant database wants more; on a nearby one, more
# threads only contend for the GIL (docs/adr/0010-issuance-database-threads.md).
ISSUANCE_DB_THREADS = env_int("ISSUANCE_DB_THREADS", 2)
# On PostgreSQL with Redis quotas, issuance's every-request statements run on the event loop
# (asyncio clients, no thread hop). Off: they run in the threads above, as on SQLite.
ISSUANCE_ON_EVENT_LOOP = env_bool("ISSUANCE_ON_EVENT_LOOP", True)
# Live-capable models a profile may name; the operator adds more with GEMINI_LIVE_MODELS_EXTRA.
GEMINI_LIVE_MODELS = [
    "gemini-2.5-flash-native-audio-preview-09-2025",
    "gemini-live-2.5-flash-preview",
    "gemini-2.5-flash-preview-native-audio-dialog",
    "gemini-2.0-flash-live-001",
    *env_list("GEMINI_LIVE_MODELS_EXTRA"),
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- E-mail: invitations (portal/mail.py) --------------------------------------------------

# EMAIL_URL names the mail server: smtp://user:pass@host:25, smtp+tls://…:587 (STARTTLS),
# smtps://…:465 (TLS), console:// or locmem://. Unset, `make dev` (DEBUG) prints mail to the
# console and production sends none: owners then hand the sign-in link over themselves.
# The URL itself is not kept as a setting, so Django's error pages cannot show its password.
_email = parse_email_url(env_str("EMAIL_URL") or ("console://" if DEBUG else ""))
EMAIL_BACKEND = _email.backend
EMAIL_HOST = _email.host
EMAIL_PORT = _email.port
EMAIL_HOST_USER = _email.user
EMAIL_HOST_PASSWORD = _email.password
EMAIL_USE_TLS = _email.use_tls
EMAIL_USE_SSL = _email.use_ssl
EMAIL_TIMEOUT = 10  # seconds: an unreachable server must not hold an owner's request long
del _email
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Ephemera <ephemera@localhost>")
# The portal's public address (https://ephemera.example.com) for links in e-mails. Unset, a
# link names the address the inviting owner's own request came in on.
PORTAL_URL = env_str("PORTAL_URL").rstrip("/")
if PORTAL_URL and not PORTAL_URL.startswith(("https://", "http://")):
    raise ImproperlyConfigured(
        f"PORTAL_URL must start with https:// or http://, got {PORTAL_URL!r}"
    )

# --- Internationalisation and static files -------------------------------------------------

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG

# --- Security ------------------------------------------------------------------------------

SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SESSION_COOKIE_HTTPONLY = True
# The token for forms and the API docs comes from the page, never from the cookie.
CSRF_COOKIE_HTTPONLY = True
# Lax, not Strict: Google's sign-in returns by a cross-site redirect that needs the session.
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=not DEBUG)
# Load balancer probes reach a web process over plain HTTP (see ProbeMiddleware).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if env_bool("SECURE_PROXY_SSL_HEADER", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Sent by portal.middleware.ContentSecurityPolicyMiddleware (Django 6.0's SECURE_CSP shape).
# Nothing inline runs: the admin, allauth's pages and ninja's Swagger UI load every script and
# stylesheet from our own static files. The one inline <style> left, in the admin's change
# list, is allowed by its hash (a test recomputes it from the installed Django). Swagger UI
# draws its icons from data: images. Sign-in forms post to us and are redirected to Google,
# which form-action must allow.
_SIGN_IN_ORIGIN = GOOGLE_OAUTH_MOCK_URL or "https://accounts.google.com"
SECURE_CSP: dict[str, list[str]] = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'", "'sha256-blvLUW3UscWqsXGByNOqdBboM+ShWAuugp2mC/wbafU='"],
    "img-src": ["'self'", "data:"],
    "font-src": ["'self'"],
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'none'"],
    "frame-ancestors": ["'none'"],
    "form-action": ["'self'", _SIGN_IN_ORIGIN],
}

# Request bodies: token requests are tiny; nothing on the site uploads files.
DATA_UPLOAD_MAX_MEMORY_SIZE = 256 * 1024
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000
FILE_UPLOAD_MAX_MEMORY_SIZE = 256 * 1024

# --- Logging -------------------------------------------------------------------------------

# /metrics answers a bearer METRICS_TOKEN or an address in METRICS_ALLOWED_NETWORKS (loopback
# by default, e.g. a Prometheus sidecar); anyone else gets a 404.
METRICS_TOKEN = env_str("METRICS_TOKEN")
METRICS_ALLOWED_NETWORKS = [
    ipaddress.ip_network(network, strict=False)
    for network in env_list("METRICS_ALLOWED_NETWORKS", ["127.0.0.1/32", "::1/128"])
]

# JSON lines (one object per request and per issuance) unless asked for plain text; `make
# dev` (DEBUG) defaults to plain. Both formatters scrub anything shaped like a key or token,
# and every logger writes through them: Django's default LOGGING (a raw console handler under
# DEBUG, e-mail to ADMINS) and uvicorn's own handlers, installed before Django configures
# logging, would print a key sent in a URL or header as it came. portal.logs.configure_logging
# also keeps a Celery worker on these handlers.
LOG_FORMAT = env_str("LOG_FORMAT", "plain" if DEBUG else "json")
LOGGING_CONFIG = "portal.logs.configure_logging"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {
            "()": "portal.logs.ScrubbingFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        },
        "json": {"()": "portal.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        # Their own handlers replaced by none: they propagate to the console above.
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        "django.server": {"handlers": [], "level": "INFO", "propagate": True},
        # Levels stay uvicorn's (--log-level).
        "uvicorn": {"handlers": [], "propagate": True},
        "uvicorn.error": {"handlers": [], "propagate": True},
        # ephemera.access is the access log; uvicorn's line would repeat it, query string and all.
        "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": True},
        # One line per upstream call is noise; failures surface through the gateway's errors.
        "httpx2": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
    },
}
