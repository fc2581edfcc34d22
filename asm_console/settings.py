"""ASM Console settings, read from the environment (see .env.example and the README).

Two shapes of deployment share this one module:

* the embedded default: no DATABASE_URL and no CELERY_BROKER_URL. SQLite and a filesystem
  broker in ASM_DATA_DIR, a generated secret kept there, a worker inside `manage.py serve`;
* production: DATABASE_URL (PostgreSQL) and CELERY_BROKER_URL (Redis) set, SECRET_KEY required,
  HTTPS hardening on.
"""

from __future__ import annotations

import re
import warnings
from datetime import timedelta
from pathlib import Path

from csp.constants import NONE, SELF

from asm_console.env import Env, SettingError, secret_key_file

env = Env()

BASE_DIR = Path(__file__).resolve().parent.parent

DATA_DIR = BASE_DIR / (env.string("ASM_DATA_DIR") or "data")
EMBEDDED = not env.is_set("DATABASE_URL") and not env.is_set("CELERY_BROKER_URL")

DEBUG = env.boolean("DEBUG", False)

if env.is_set("SECRET_KEY"):
    SECRET_KEY = env.required_str("SECRET_KEY", "")
    if len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5:
        raise SettingError("SECRET_KEY", "must be at least 50 random characters")
elif EMBEDDED:
    SECRET_KEY = secret_key_file(DATA_DIR / "secret_key")
else:
    raise SettingError(
        "SECRET_KEY",
        "is required when DATABASE_URL or CELERY_BROKER_URL is set; generate one with "
        "`python -c 'import secrets; print(secrets.token_urlsafe(64))'`",
    )

ALLOWED_HOSTS = env.items("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.items("CSRF_TRUSTED_ORIGINS", [])
# The public address of the console, used in links it sends (emails, Slack) and in the
# Enable-ASM instructions.
ASM_BASE_URL = (env.string("ASM_BASE_URL") or "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "template_partials",
    "axes",
    "csp",
    "asm_console",
    "accounts",
    "services",
    "traces",
    "signals",
    "notifications",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "accounts.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, so that a locked-out login attempt is answered before the view runs.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "asm_console.urls"
WSGI_APPLICATION = "asm_console.wsgi.application"

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
                "accounts.context_processors.roles",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------

_default_sqlite = DATA_DIR / "asm.sqlite3"
DATABASES = {"default": env.database("DATABASE_URL", f"sqlite:///{_default_sqlite}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # The embedded default writes from web threads and worker threads at once: WAL lets
    # readers run beside the writer, IMMEDIATE takes the write lock up front so two writers
    # wait for each other instead of failing with "database is locked" half-way through.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Accounts -------------------------------------------------------------------------------

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "services:catalog"
LOGOUT_REDIRECT_URL = "login"

SESSION_COOKIE_AGE = env.integer("ASM_SESSION_HOURS", 12, minimum=1, maximum=24 * 30) * 3600
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True

# Failed logins: after ASM_LOGIN_FAILURE_LIMIT failures from one IP address, or for one
# username (whether or not that account exists), further attempts are refused with 429 for
# ASM_LOGIN_COOLOFF_MINUTES. Successful logins reset the count.
AXES_FAILURE_LIMIT = env.integer("ASM_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env.integer("ASM_LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_RESET_ON_SUCCESS = True
AXES_HTTP_RESPONSE_CODE = 429
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
AXES_ENABLE_ADMIN = False
# Behind a reverse proxy, the number of proxies whose X-Forwarded-For entries are trusted.
ASM_TRUSTED_PROXY_COUNT = env.integer("ASM_TRUSTED_PROXY_COUNT", 0, minimum=0, maximum=10)
AXES_IPWARE_PROXY_COUNT = ASM_TRUSTED_PROXY_COUNT or None
AXES_IPWARE_META_PRECEDENCE_ORDER = (
    ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"] if ASM_TRUSTED_PROXY_COUNT else ["REMOTE_ADDR"]
)
ASM_AUTH_LOG_RETENTION_DAYS = env.integer("ASM_AUTH_LOG_RETENTION_DAYS", 90, minimum=1)

# --- Trace intake ---------------------------------------------------------------------------

# Agent-protocol requests (what tracers send) carry no credentials: they are accepted from
# these networks, or from anywhere with an intake API key in DD-API-KEY.
ASM_AGENT_TRUSTED_NETWORKS = env.networks(
    "ASM_AGENT_TRUSTED_NETWORKS",
    ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"],
)
# The Datadog agent's own limit on a request body, compressed or not.
ASM_INTAKE_MAX_BODY_BYTES = (
    env.integer("ASM_INTAKE_MAX_BODY_MB", 25, minimum=1, maximum=1024) * 2**20
)
# The request header that carries the address of the monitored services' clients, when the
# proxy in front of them sets one: the console's twin of the tracers' DD_TRACE_CLIENT_IP_HEADER.
# Unset, spans without the tracer's own `http.client_ip` are resolved from the usual proxy
# headers in the tracers' order.
ASM_CLIENT_IP_HEADER = (env.string("ASM_CLIENT_IP_HEADER") or "").lower() or None
if ASM_CLIENT_IP_HEADER and not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", ASM_CLIENT_IP_HEADER):
    raise SettingError(
        "ASM_CLIENT_IP_HEADER",
        f"expected a header name such as x-real-ip, got {ASM_CLIENT_IP_HEADER!r}",
    )
# Time the console's detection may spend on one request; past it, the remaining rules are
# skipped for that request and the overrun is counted.
ASM_DETECTION_BUDGET_US = (
    env.integer("ASM_DETECTION_BUDGET_MS", 20, minimum=1, maximum=10_000) * 1000
)
ASM_SPAN_RETENTION_DAYS = env.integer("ASM_SPAN_RETENTION_DAYS", 15, minimum=1)
ASM_EVENT_RETENTION_DAYS = env.integer("ASM_EVENT_RETENTION_DAYS", 90, minimum=1)

# --- HTTP hardening -------------------------------------------------------------------------

ASM_HTTPS = env.boolean("ASM_HTTPS", not EMBEDDED and not DEBUG)
if ASM_HTTPS:
    SECURE_SSL_REDIRECT = True
    # Tracers speak plain HTTP to their agent; the agent protocol and the health check must
    # not be redirected.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^info$", r"^v0\.\d+/", r"^telemetry/"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.integer("ASM_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.boolean("ASM_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env.boolean("ASM_HSTS_PRELOAD", False)
    if not SECURE_HSTS_PRELOAD:
        # Preloading is a deliberate, hard-to-undo opt-in (ASM_HSTS_PRELOAD), not an omission.
        SILENCED_SYSTEM_CHECKS = ["security.W021"]
if env.boolean("ASM_TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "frame-ancestors": [NONE],
        "form-action": [SELF],
        "base-uri": [NONE],
        "object-src": [NONE],
    },
}

# --- Static files ---------------------------------------------------------------------------

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# WhiteNoise serves straight from the app folders, so the embedded default needs no
# collectstatic step; the Docker image collects them anyway for compression.
WHITENOISE_USE_FINDERS = True
warnings.filterwarnings("ignore", message="No directory at")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Email ----------------------------------------------------------------------------------

EMAIL_HOST = env.string("EMAIL_HOST")
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_PORT = env.integer("EMAIL_PORT", 587, minimum=1, maximum=65535)
    EMAIL_HOST_USER = env.string("EMAIL_HOST_USER", "") or ""
    EMAIL_HOST_PASSWORD = env.string("EMAIL_HOST_PASSWORD", "") or ""
    EMAIL_USE_TLS = env.boolean("EMAIL_USE_TLS", EMAIL_PORT == 587)
    EMAIL_USE_SSL = env.boolean("EMAIL_USE_SSL", EMAIL_PORT == 465)
    if EMAIL_USE_TLS and EMAIL_USE_SSL:
        raise SettingError("EMAIL_USE_SSL", "cannot be on together with EMAIL_USE_TLS")
    EMAIL_TIMEOUT = env.integer("EMAIL_TIMEOUT", 15, minimum=1)
else:
    # Without an SMTP server, mail is written to the log so that nothing is silently lost.
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = env.email("DEFAULT_FROM_EMAIL", "ASM Console <asm-console@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Notifications --------------------------------------------------------------------------

# Slack and webhook requests refuse private, loopback, link-local, CGNAT, multicast and cloud
# metadata addresses (notifications/outbound.py). True lets receivers on private networks
# (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7) through, for on-premises installs;
# loopback, link-local and metadata addresses stay refused.
ASM_OUTBOUND_ALLOW_PRIVATE = env.boolean("ASM_OUTBOUND_ALLOW_PRIVATE", False)
# Exact (address, port) pairs allowed whatever the above: the tests' local receivers. Not
# read from the environment.
ASM_OUTBOUND_ALLOW_TARGETS: frozenset[tuple[str, int]] = frozenset()

# --- Celery ---------------------------------------------------------------------------------

if env.is_set("CELERY_BROKER_URL"):
    CELERY_BROKER_URL = env.broker_url("CELERY_BROKER_URL", "")
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {"visibility_timeout": 3600}
else:
    # The embedded broker: kombu's filesystem transport, a queue of files in ASM_DATA_DIR
    # that the web process writes and the in-process worker of `manage.py serve` reads.
    _broker_dir = DATA_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
CELERY_BROKER_CONNECTION_TIMEOUT = 5
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Work crosses to workers through database rows; tasks return nothing worth keeping.
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "prune-auth-records": {
        "task": "accounts.tasks.prune_auth_records",
        "schedule": timedelta(hours=1),
    },
    "sweep-intake": {"task": "traces.tasks.sweep_intake", "schedule": timedelta(seconds=15)},
    # Each processed batch also asks for a run; this one catches what a lost message left.
    "evaluate-signals": {
        "task": "signals.tasks.evaluate_signals",
        "schedule": timedelta(seconds=15),
    },
    # Each signal change also asks for a send; this one sends retries and what a lost
    # message left.
    "send-notifications": {
        "task": "notifications.tasks.send_due_notifications",
        "schedule": timedelta(seconds=15),
    },
    "purge-expired-traces": {
        "task": "traces.tasks.purge_expired",
        "schedule": timedelta(hours=1),
    },
    # Sends each subscriber's weekly digest once their day and hour have come; running it
    # again that week sends nothing (notifications/digest.py claims the week first).
    "send-weekly-digests": {
        "task": "notifications.digest_tasks.send_due_digests",
        "schedule": timedelta(minutes=15),
    },
}
# Autodiscovery imports each app's tasks.py only.
CELERY_IMPORTS = ["notifications.digest_tasks"]

# --- REST API -------------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.APIKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["accounts.permissions.RolePermission"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "asm_console.api.Pagination",
    "EXCEPTION_HANDLER": "asm_console.api.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ASM Console API",
    "DESCRIPTION": (
        "REST API of ASM Console. Authenticate with an API key in the `DD-API-KEY` header or "
        "as `Authorization: Bearer <key>`; the browser uses its session. Errors always have "
        'the shape `{"error": {"code", "message", "details"}}`.'
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["accounts.permissions.RolePermission"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api/v1",
}

# --- Logging --------------------------------------------------------------------------------

LOG_LEVEL = (env.string("LOG_LEVEL") or "INFO").upper()
if LOG_LEVEL not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
    raise SettingError("LOG_LEVEL", "expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"axes": {"level": "WARNING"}},
}
