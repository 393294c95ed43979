"""One settings module for every environment; everything comes from env vars.

The embedded default (no variables set) is SQLite and Celery's filesystem
broker under var/, so `make run` works on a fresh machine. DATABASE_URL and
REDIS_URL switch to PostgreSQL (with row-level security) and Redis.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from portal.env import env_bool, env_email, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("PORTAL_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG and env_bool("PORTAL_REQUIRE_SECRET_KEY", False):
        raise ImproperlyConfigured("SECRET_KEY must be set in production")
    # A fixed development key: good enough for `make run` and tests, never for production
    # (PORTAL_REQUIRE_SECRET_KEY=1 turns its absence into a start-up error).
    SECRET_KEY = "dev-only-insecure-key-3c1f0b8e9d4a4f1e8a7b6c5d4e3f2a1b"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
SITE_URL = env_str("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
    "allauth.mfa",
    "allauth.usersessions",
    "portal",
    "tenants",
    "tenants.identity",
    "agents",
    "agents.guardrails",
    "agents.knowledge",
    "agents.tools",
    "agents.skills",
    "agents.memory",
    "agents.registry",
    "billing",
]

# Apps whose every concrete model must be tenant-owned or explicitly a platform
# model (system check tenants.E001). New rooms are added here as they land.
TENANT_APPS = ["tenants", "agents", "guardrails", "knowledge", "tools", "skills", "memory", "registry", "billing"]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # Refuses a knowledge upload body over the limit before the CSRF check or a view reads it.
    "agents.knowledge.uploads.UploadLimitMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    # Records every signed-in session per user, so that removing a member can end theirs.
    "allauth.usersessions.middleware.UserSessionsMiddleware",
    "tenants.middleware.TenantMiddleware",
    # A view that met a database held longer than its busy timeout: 503 / "try again", not 500.
    "portal.db.busy.DatabaseBusyMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
ASGI_APPLICATION = "portal.asgi.application"

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
                "portal.context_processors.navigation",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------
# DATABASE_URL is what the application connects as. On PostgreSQL that role must
# not own the tables, be superuser or have BYPASSRLS, so row-level security holds;
# DATABASE_OWNER_URL (the owner of the schema) is used only by `migrate` and by the
# test suite to create the test database.
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'portal.sqlite3'}")
DATABASE_OWNER_URL = env_str("DATABASE_OWNER_URL", "")


def _database(url: str) -> dict:
    try:
        config = dj_database_url.parse(url, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0, minimum=0))
    except Exception as exc:  # dj_database_url raises several types for a bad URL
        raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}")
    engine = config["ENGINE"]
    if engine == "django.db.backends.postgresql":
        # Our subclass applies the tenant context to every transaction (SET LOCAL).
        config["ENGINE"] = "portal.db.postgresql"
        config["CONN_HEALTH_CHECKS"] = True
        if env_bool("DATABASE_POOL", True):
            # psycopg's pool (Django's built-in support): under ASGI every request runs on
            # a thread of its own, so without it each request opened, and closed, a new
            # PostgreSQL connection. Safe with row-level security: the tenant settings are
            # transaction-local (portal.db.postgresql), so a pooled connection carries none.
            config["CONN_MAX_AGE"] = 0  # Django refuses persistent connections with a pool
            config.setdefault("OPTIONS", {})["pool"] = {
                "min_size": env_int("DATABASE_POOL_MIN_SIZE", 1, minimum=0),
                "max_size": env_int("DATABASE_POOL_MAX_SIZE", 20, minimum=1),
                "timeout": env_int("DATABASE_POOL_TIMEOUT", 10, minimum=1),
            }
    elif engine == "django.db.backends.sqlite3":
        config["CONN_MAX_AGE"] = 0
        config["OPTIONS"] = {
            # WAL lets the web process and the Celery worker read and write side by side.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
    else:
        raise ImproperlyConfigured(f"Unsupported database engine in DATABASE_URL: {engine}")
    return config


DATABASES = {"default": _database(DATABASE_URL)}
DATABASE_IS_POSTGRES = DATABASES["default"]["ENGINE"] == "portal.db.postgresql"
if DATABASE_IS_POSTGRES and not DATABASE_OWNER_URL:
    raise ImproperlyConfigured(
        "DATABASE_OWNER_URL must be set with a PostgreSQL DATABASE_URL: migrations run as the "
        "schema owner, the application as a role row-level security applies to."
    )
DATABASE_OWNER = _database(DATABASE_OWNER_URL) if DATABASE_OWNER_URL else None
# Kept apart from DATABASES, whose dict the owner swap (portal.db.owner) edits in place.
DATABASE_APP_ROLE = DATABASES["default"].get("USER", "") if DATABASE_IS_POSTGRES else ""
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis, cache, Celery -------------------------------------------------------
REDIS_URL = env_str("REDIS_URL", "")
if REDIS_URL and urlsplit(REDIS_URL).scheme not in {"redis", "rediss", "unix"}:
    raise ImproperlyConfigured(f"REDIS_URL must be a redis:// URL, got {REDIS_URL!r}")

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "portal.cache.SharedRedisCache",
            "LOCATION": REDIS_URL,
            # Without it, every ASGI request opened a Redis connection of its own (portal/cache.py).
            "OPTIONS": {"pool_class": "portal.cache.SharedConnectionPool"},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_BROKER_DIR = VAR_DIR / "celery"
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL or "filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {}
if urlsplit(CELERY_BROKER_URL).scheme == "redis":  # rediss keeps kombu's own (its TLS checks key on the scheme)
    # kombu's Redis transport, keeping one Redis client per channel (see portal/broker.py).
    CELERY_BROKER_TRANSPORT = "portal.broker:Transport"
if urlsplit(CELERY_BROKER_URL).scheme in {"redis", "rediss"}:
    # Redis gives an unacknowledged task (acks_late) back to the queue, marked redelivered,
    # once it has been out this long; kombu's default is an hour, so a task whose worker
    # host vanished (no parent left to reject it) waited an hour. The timeout must be longer
    # than any acks_late task can legitimately stay unacknowledged, or a task still running
    # is handed to a second worker: above 360 s, the longest hard time limit (knowledge
    # ingestion, agents.knowledge.tasks.INGEST_TIME_LIMIT; a turn's is 150 s), with room for
    # a short wait in the worker's prefetch. A turn whose worker process died is taken over
    # at once anyway (its parent rejects the task; agents.turns sees the dead lease); this
    # timeout only matters when a whole worker host is gone, and by then the beat sweeper has
    # already ended the turn (150 s + 60 s grace) and billed what it streamed.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 420}
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_DIR / "out"),
        "data_folder_out": str(CELERY_BROKER_DIR / "out"),
        "control_folder": str(CELERY_BROKER_DIR / "control"),
        "processed_folder": str(CELERY_BROKER_DIR / "processed"),
        "store_processed": False,
    }
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_DEFAULT_QUEUE = "default"
# Celery beat (run inside the `make run` worker with -B; a separate `celery beat` in production).
# Invoice drafts follow usage every hour; drafting is idempotent and never touches a final invoice.
CELERY_BEAT_SCHEDULE = {
    "agents-fail-stuck-turns": {"task": "agents.tasks.fail_stuck_turns", "schedule": 60.0},
    "agents-delete-abandoned-conversations": {
        "task": "agents.tasks.delete_abandoned_conversations",
        "schedule": 3600.0,
    },
    # Documents whose other-tenant markers predate a tenant change (started at once by the
    # change itself; this catches documents indexed before markers were stored and lost tasks).
    "knowledge-rescan-document-markers": {
        "task": "agents.knowledge.tasks.rescan_stale_document_markers",
        "schedule": 600.0,
    },
    "billing-draft-monthly-invoices": {
        "task": "billing.tasks.draft_monthly_invoices",
        "schedule": env_int("BILLING_DRAFT_INVOICES_EVERY_SECONDS", 3600, minimum=60),
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- Auth (django-allauth) ------------------------------------------------------
AUTH_USER_MODEL = "tenants.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "home"
ACCOUNT_LOGOUT_REDIRECT_URL = "account_login"
ACCOUNT_ADAPTER = "tenants.adapters.AccountAdapter"
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
# Invitations prove the address; self-service signup is closed (see AccountAdapter).
ACCOUNT_EMAIL_VERIFICATION = "none"
ACCOUNT_LOGOUT_ON_GET = False
ACCOUNT_LOGIN_ON_PASSWORD_RESET = False
ACCOUNT_PASSWORD_RESET_BY_CODE_ENABLED = False
ACCOUNT_RATE_LIMITS = {"login_failed": "10/m/ip,5/5m/key"}
ACCOUNT_SESSION_REMEMBER = None

# Two-factor authentication (allauth.mfa): an authenticator app, plus recovery codes.
# Tenants may require it of their members (Tenant.require_mfa, TenantMiddleware).
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = env_str("MFA_TOTP_ISSUER", "Tenant Portal")
MFA_ADAPTER = "tenants.identity.mfa.MFAAdapter"
# allauth.usersessions: the middleware records each authenticated session once per
# request (whatever signed it in: password, invitation, SSO), with last-seen time.
USERSESSIONS_TRACK_ACTIVITY = env_bool("USERSESSIONS_TRACK_ACTIVITY", True)

# Enterprise single sign-on: one OpenID Connect app per tenant (tenants/identity/sso.py
# keeps allauth's SocialApp rows in sync with SSOConnection). The adapter lets the
# tenant's IdP sign in and provision only addresses of the domains that tenant claims.
SOCIALACCOUNT_ADAPTER = "tenants.adapters.SocialAccountAdapter"
SOCIALACCOUNT_PROVIDERS = {
    "openid_connect": {
        # Adds a nonce, verifies the ID token's signature against the IdP's JWKS and
        # sends tenant apps to our callback (allauth's skips both checks).
        "provider_class": "tenants.identity.sso_provider.TenantOpenIDConnectProvider",
        "OAUTH_PKCE_ENABLED": True,
    }
}
SOCIALACCOUNT_AUTO_SIGNUP = True
SOCIALACCOUNT_LOGIN_ON_GET = False
# Linking a sign-in to an existing account by email is decided by the adapter
# (only for a domain the tenant claims), never by allauth's generic rule.
SOCIALACCOUNT_EMAIL_AUTHENTICATION = False
SOCIALACCOUNT_EMAIL_AUTHENTICATION_AUTO_CONNECT = False
SOCIALACCOUNT_EMAIL_VERIFICATION = "none"
SOCIALACCOUNT_STORE_TOKENS = False
SOCIALACCOUNT_REQUESTS_TIMEOUT = env_int("SSO_REQUESTS_TIMEOUT", 10, minimum=1)
# http:// and loopback issuers (a test IdP on 127.0.0.1) are refused unless this is on.
SSO_ALLOW_LOOPBACK_ISSUERS = env_bool("SSO_ALLOW_LOOPBACK_ISSUERS", DEBUG)
# A claimed email domain routes sign-ins to the tenant's IdP only once the tenant proved
# control of it (DNS TXT record, or an operator's check). 0 trusts claims as typed.
SSO_VERIFY_DOMAINS = env_bool("SSO_VERIFY_DOMAINS", True)
# Resolvers for that check ("host" or "host:port"); empty = the system's (/etc/resolv.conf).
SSO_DNS_NAMESERVERS = env_list("SSO_DNS_NAMESERVERS", [])
SSO_DNS_TIMEOUT_SECONDS = env_int("SSO_DNS_TIMEOUT_SECONDS", 3, minimum=1)

SESSION_COOKIE_HTTPONLY = True
# Flash messages live in the session, so none survives a sign-out into the next person's view.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# --- Email ---------------------------------------------------------------------
EMAIL_HOST = env_str("EMAIL_HOST", "")
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_PORT = env_int("EMAIL_PORT", 587)
    EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
    EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
else:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Tenant Portal <no-reply@portal.local>")
# Where the owners and admins of a suspended tenant write to have it reactivated (the
# suspended page and the API's tenant_suspended problem). Empty: they are told to contact
# the provider, with no address.
SUPPORT_EMAIL = env_email("SUPPORT_EMAIL")

INVITATION_TTL_DAYS = env_int("INVITATION_TTL_DAYS", 7, minimum=1)

# --- Token service (tenants/identity) -------------------------------------------
TOKEN_ISSUER = env_str("TOKEN_ISSUER", SITE_URL).rstrip("/")
# The audience of tokens for this portal's API; exchanged tokens narrow it to one of TOKEN_AUDIENCES.
TOKEN_AUDIENCE = env_str("TOKEN_AUDIENCE", "tenant-portal-api")
EXCHANGE_DEFAULT_AUDIENCE = env_str("EXCHANGE_DEFAULT_AUDIENCE", "agent-runtime")
TOKEN_AUDIENCES = env_list("TOKEN_AUDIENCES", [TOKEN_AUDIENCE, EXCHANGE_DEFAULT_AUDIENCE, "portal-gateway"])
TOKEN_LIFETIME_SECONDS = env_int("TOKEN_LIFETIME_SECONDS", 15 * 60, minimum=30)
EXCHANGED_TOKEN_LIFETIME_SECONDS = env_int("EXCHANGED_TOKEN_LIFETIME_SECONDS", 5 * 60, minimum=30)
TOKEN_LEEWAY_SECONDS = env_int("TOKEN_LEEWAY_SECONDS", 10, minimum=0)

# --- Agent runtime and models (agents/) ------------------------------------------
# local: the reference agent in-process; http: any server speaking the AgentCore
# Runtime HTTP contract at RUNTIME_URL; agentcore: boto3 bedrock-agentcore, with
# the runtime ARN from the tenant's bindings (silo) or AGENTCORE_RUNTIME_ARN.
AGENT_RUNTIME = env_str("AGENT_RUNTIME", "local")
if AGENT_RUNTIME not in {"local", "http", "agentcore"}:
    raise ImproperlyConfigured(f"AGENT_RUNTIME must be local, http or agentcore, got {AGENT_RUNTIME!r}")
RUNTIME_URL = env_str("RUNTIME_URL", "http://127.0.0.1:8080")
RUNTIME_TIMEOUT_SECONDS = env_int("RUNTIME_TIMEOUT_SECONDS", 120, minimum=1)
# A turn's event stream ends after this long and the browser reconnects where it left off
# (Last-Event-ID). Set it below a proxy's or load balancer's limit on one response.
SSE_STREAM_MAX_SECONDS = env_int("SSE_STREAM_MAX_SECONDS", 300, minimum=1)
# A queued turn no worker has started after this long is failed (with a retry button)
# by agents.tasks.fail_stuck_turns, which beat runs every minute.
TURN_QUEUED_MAX_SECONDS = env_int("TURN_QUEUED_MAX_SECONDS", 900, minimum=60)
AGENTCORE_RUNTIME_ARN = env_str("AGENTCORE_RUNTIME_ARN", "")
AGENTCORE_QUALIFIER = env_str("AGENTCORE_QUALIFIER", "DEFAULT")
AWS_REGION = env_str("AWS_REGION", "us-east-1")
# The role the portal assumes (STS AssumeRole with session tags tenant_id, tier and
# deployment_model; tenants/aws.py) for every AWS call it makes for a pool or bridge tenant,
# and for a silo tenant without its own iam_role_arn binding. Empty: those calls use the
# portal's own default credentials (development, single-account set-ups).
AWS_TENANT_ROLE_ARN = env_str("AWS_TENANT_ROLE_ARN", "")
if AWS_TENANT_ROLE_ARN and not re.fullmatch(
    r"arn:aws(-[^:]+)?:iam::[0-9]{12}:role/([\w+=,.@-]+/)*[\w+=,.@-]{1,64}", AWS_TENANT_ROLE_ARN, flags=re.ASCII
):
    raise ImproperlyConfigured(f"AWS_TENANT_ROLE_ARN is not an IAM role ARN: {AWS_TENANT_ROLE_ARN!r}")
# How long assumed tenant credentials live (STS DurationSeconds: 900 is its minimum; the
# role's MaxSessionDuration caps it). They are refreshed a third of this before they expire.
AWS_TENANT_ROLE_SESSION_SECONDS = env_int("AWS_TENANT_ROLE_SESSION_SECONDS", 900, minimum=900)
# A silo tenant's own Amazon Bedrock AgentCore Gateway (its gateway_id binding) serves its
# tools when AGENT_RUNTIME=agentcore: the portal's tools gateway forwards to this MCP
# endpoint, SigV4-signed (agents/tools/agentcore.py). {gateway_id} and {region} are filled
# in per tenant; tests point it at a fake MCP server on loopback.
AGENTCORE_GATEWAY_URL = env_str(
    "AGENTCORE_GATEWAY_URL", "https://{gateway_id}.gateway.bedrock-agentcore.{region}.amazonaws.com/mcp"
)
if not AGENTCORE_GATEWAY_URL.startswith(("https://", "http://")) or "{gateway_id}" not in AGENTCORE_GATEWAY_URL:
    raise ImproperlyConfigured("AGENTCORE_GATEWAY_URL must be an http(s) URL with a {gateway_id} placeholder")
# The `aud` of the act-on-behalf token the portal sends such a gateway (a further RFC 8693
# hop with scope tools:invoke only): no gateway of the portal's accepts it back.
AGENTCORE_GATEWAY_TOKEN_AUDIENCE = env_str("AGENTCORE_GATEWAY_TOKEN_AUDIENCE", "agentcore-gateway")
if AGENTCORE_GATEWAY_TOKEN_AUDIENCE in {EXCHANGE_DEFAULT_AUDIENCE, TOKEN_AUDIENCE}:
    raise ImproperlyConfigured("AGENTCORE_GATEWAY_TOKEN_AUDIENCE must differ from the portal's own audiences")
# Model providers this deployment can reach. Offerings of other providers are
# skipped by routing, so the embedded default answers with the offline model.
MODEL_PROVIDERS = env_list("MODEL_PROVIDERS", ["offline"])
# Entitlements that are also passed to the runtime as feature flags.
RUNTIME_FEATURE_FLAGS = env_list("RUNTIME_FEATURE_FLAGS", ["knowledge_bases", "tools", "memory", "custom_guardrails"])

# --- Knowledge bases (agents/knowledge) --------------------------------------------
KNOWLEDGE_MAX_UPLOAD_BYTES = env_int("KNOWLEDGE_MAX_UPLOAD_BYTES", 25 * 1024 * 1024, minimum=1024)
# Uploaded originals live here (per tenant folders); chunks and index entries live in the database.
KNOWLEDGE_FILES_DIR = Path(env_str("KNOWLEDGE_FILES_DIR", str(VAR_DIR / "knowledge")))
# Where the reference agent reaches the portal's gateway APIs (http/agentcore runtimes).
PORTAL_GATEWAY_URL = env_str("PORTAL_GATEWAY_URL", SITE_URL).rstrip("/")
# hybrid retrieval: an OpenAI-compatible /embeddings endpoint, or "bedrock" (Titan through boto3).
KNOWLEDGE_EMBEDDINGS = env_str("KNOWLEDGE_EMBEDDINGS", "")
KNOWLEDGE_EMBEDDINGS_URL = env_str("KNOWLEDGE_EMBEDDINGS_URL", "")
KNOWLEDGE_EMBEDDINGS_MODEL = env_str("KNOWLEDGE_EMBEDDINGS_MODEL", "amazon.titan-embed-text-v2:0")
# bedrock backend: the pooled Bedrock knowledge base and its S3 data source (silo tenants
# name their own knowledge base id in their resource bindings).
KNOWLEDGE_BEDROCK_KB_ID = env_str("KNOWLEDGE_BEDROCK_KB_ID", "")
KNOWLEDGE_BEDROCK_DATA_SOURCE_ID = env_str("KNOWLEDGE_BEDROCK_DATA_SOURCE_ID", "")
KNOWLEDGE_S3_BUCKET = env_str("KNOWLEDGE_S3_BUCKET", "")

# --- REST API ------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tenants.identity.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "portal.schema.ProblemAutoSchema",
    "DEFAULT_PAGINATION_CLASS": "portal.drf.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "portal.api.problem_exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["portal.drf.JSONParser", "rest_framework.parsers.FormParser"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Tenant Portal API",
    "DESCRIPTION": (
        "The multi-tenant agent service: tenants, members and invitations; agents, conversations and "
        "streamed turns; knowledge bases; guardrails; usage, limits and invoices; and the operator's "
        "billing views, shared agent registry and shared skills. Every tenant call carries an access token "
        "from /oauth/token that speaks for one tenant; the operator calls (/api/v1/operator/) take a staff "
        "browser session or a staff member's operator API token (tpo_…) instead. Errors are problem details "
        "(application/problem+json)."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Choice sets shared by several fields get one stable name (not "Role792Enum").
    "ENUM_NAME_OVERRIDES": {
        "MemberRoleEnum": "tenants.roles.Role.choices",
        "TurnStatusEnum": "agents.models.MessageStatus.choices",
        "InvoiceStatusEnum": "billing.models.InvoiceStatus.choices",
        "SkillStatusEnum": "agents.skills.models.SkillStatus.choices",
        "AgentVersionStateEnum": "agents.registry.models.VersionState.choices",
    },
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from the pinned drf-spectacular-sidecar package, never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Static files --------------------------------------------------------------
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # Expected 4xx (a role's 403) print one line; Django would attach their traceback.
    "formatters": {"console": {"()": "portal.log.ClientErrorsOnOneLine"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "console"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
