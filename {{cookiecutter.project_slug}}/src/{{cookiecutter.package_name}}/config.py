"""Configuration classes, one per environment, read from the environment.

``APP_ENV`` picks the class (``development``, ``testing``, ``production``;
unset means production, so a forgotten variable fails closed). Any
``FLASK_``-prefixed variable then overrides a key, for example
``FLASK_MAX_CONTENT_LENGTH=2097152``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping
from typing import Any, ClassVar

from limits import parse_many

EXAMPLE_SECRET_KEY = "change-me-to-a-long-random-string"  # noqa: S105 - refused
MIN_SECRET_KEY_LENGTH = 32
# A connect argument the app reads and libpq never sees (see database.py).
ANSWER_TIMEOUT = "answer_timeout"


class ConfigError(RuntimeError):
    """The environment does not describe a runnable configuration."""


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or default


def env_int(name: str, default: int) -> int:
    raw = env_str(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def env_optional_int(name: str) -> int | None:
    return None if env_str(name) is None else env_int(name, 0)


def env_flag(name: str, default: bool) -> bool:
    raw = env_str(name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def env_fraction(name: str, default: float) -> float:
    """A number from 0 to 1, such as a sampling rate."""
    raw = env_str(name)
    if raw is None:
        return default
    message = f"{name} must be a number from 0 to 1, got {raw!r}"
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(message) from None
    if not 0 <= value <= 1:  # nan and inf fail this too
        raise ConfigError(message)
    return value


def env_list(name: str) -> list[str] | None:
    raw = env_str(name)
    if raw is None:
        return None
    return [item.strip() for item in raw.split(",") if item.strip()]


def normalize_database_url(url: str) -> str:
    """Accept the ``postgres://`` and ``postgresql://`` forms hosting providers
    hand out, and point them at the psycopg 3 driver SQLAlchemy needs."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def engine_options(url: str) -> dict[str, Any]:
    """Pool settings and bounded waits (see database.py).

    Connections are checked before use and recycled before servers or
    proxies drop idle ones; the pool is bounded per process, and a request
    waits at most ``DATABASE_POOL_TIMEOUT`` for a free connection. On
    PostgreSQL the server cancels a statement after
    ``DATABASE_STATEMENT_TIMEOUT``, the app gives a connection up when the
    server has not answered for ``DATABASE_ANSWER_TIMEOUT`` (a frozen
    server cancels nothing), and TCP keepalives and ``tcp_user_timeout``
    let the kernel notice a peer that is gone. SQLite waits up to
    ``DATABASE_BUSY_TIMEOUT`` for another writer's lock.
    """
    if url in ("sqlite://", "sqlite:///:memory:"):
        return {}  # one shared in-memory connection; nothing to size
    options: dict[str, Any] = {
        "pool_pre_ping": True,
        "pool_recycle": env_int("DATABASE_POOL_RECYCLE", 1800),
        "pool_size": env_int("DATABASE_POOL_SIZE", 5),
        "max_overflow": env_int("DATABASE_MAX_OVERFLOW", 5),
        "pool_timeout": env_int("DATABASE_POOL_TIMEOUT", 10),
    }
    if url.startswith("sqlite"):
        options["connect_args"] = {"timeout": env_int("DATABASE_BUSY_TIMEOUT", 5)}
    if url.startswith("postgresql"):
        statement_timeout = env_int("DATABASE_STATEMENT_TIMEOUT", 10)
        answer_timeout = env_int(
            "DATABASE_ANSWER_TIMEOUT", statement_timeout + 5 if statement_timeout else 0
        )
        options["connect_args"] = {
            "connect_timeout": env_int("DATABASE_CONNECT_TIMEOUT", 3),
            "application_name": env_str("DATABASE_APPLICATION_NAME", "web"),
            "options": f"-c statement_timeout={statement_timeout * 1000}",
            "keepalives": 1,
            "keepalives_idle": env_int("DATABASE_KEEPALIVES_IDLE", 30),
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "tcp_user_timeout": env_int("DATABASE_TCP_USER_TIMEOUT", answer_timeout)
            * 1000,
            # Not a libpq parameter: database.py takes it out (see there).
            ANSWER_TIMEOUT: answer_timeout,
        }
    return options

{% if cookiecutter.use_celery == "y" %}
def celery_settings(redis_url: str | None) -> dict[str, Any]:
    """Celery settings (lowercase names), from the environment.

    Delivery is at-least-once: a task is acknowledged after it finishes and
    requeued if its worker dies, so tasks must be idempotent. Redis hands an
    unacknowledged message to another worker after ``visibility_timeout``,
    which must outlast the hard time limit or long tasks run twice.
    """
    hard_limit = env_int("CELERY_TASK_TIME_LIMIT", 600)
    soft_limit = env_int("CELERY_TASK_SOFT_TIME_LIMIT", hard_limit - 60)
    visibility_timeout = env_int("CELERY_VISIBILITY_TIMEOUT", hard_limit * 2)
    if not 0 < soft_limit < hard_limit:
        raise ConfigError(
            "CELERY_TASK_SOFT_TIME_LIMIT must be positive and below "
            f"CELERY_TASK_TIME_LIMIT ({soft_limit} >= {hard_limit})"
        )
    if visibility_timeout <= hard_limit:
        raise ConfigError(
            "CELERY_VISIBILITY_TIMEOUT must exceed CELERY_TASK_TIME_LIMIT "
            f"({visibility_timeout} <= {hard_limit})"
        )
    enqueue_timeout = env_int("CELERY_BROKER_TIMEOUT_SECONDS", 3)
    if enqueue_timeout < 1:
        raise ConfigError(
            f"CELERY_BROKER_TIMEOUT_SECONDS must be at least 1, got {enqueue_timeout}"
        )
    # Sending a task waits on Redis at most twice (connecting, one command),
    # each wait bounded by half the budget, and is not retried: a request
    # that enqueues work answers 503 within CELERY_BROKER_TIMEOUT_SECONDS
    # when Redis is down or frozen, instead of holding its thread.
    wait = enqueue_timeout / 2
    transport_options: dict[str, Any] = {
        "visibility_timeout": visibility_timeout,
        "socket_timeout": wait,
        "socket_connect_timeout": wait,
        # Lets the kernel notice a peer gone without closing (a partition,
        # a dead host) on long-lived idle connections.
        "socket_keepalive": True,
        # Connecting to send is tried once, without kombu's 2 s pause and
        # second try; the worker's own reconnect loop is not affected.
        "max_retries": 0,
    }
    backend_options: dict[str, Any] = {}
    key_prefix = env_str("CELERY_KEY_PREFIX")
    if key_prefix:
        transport_options["global_keyprefix"] = key_prefix
        backend_options["global_keyprefix"] = key_prefix
    return {
        "broker_url": env_str("CELERY_BROKER_URL", redis_url),
        "result_backend": env_str("CELERY_RESULT_BACKEND", redis_url),
        "broker_transport_options": transport_options,
        "result_backend_transport_options": backend_options,
        "broker_connection_timeout": wait,
        "redis_socket_connect_timeout": wait,
        "redis_socket_timeout": wait,
        "redis_socket_keepalive": True,
        "broker_connection_retry_on_startup": True,
        # A worker that lost Redis keeps trying to reconnect, however long
        # the outage (the default gives up after 100 tries).
        "broker_connection_max_retries": None,
        # No retry: redis-py already replaces a pooled connection that a
        # restarted Redis closed, and a retry would double the wait.
        "task_publish_retry": False,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": hard_limit,
        "task_soft_time_limit": soft_limit,
        "task_track_started": True,
        "result_expires": env_int("CELERY_RESULT_EXPIRES", 24 * 3600),
        "worker_hijack_root_logger": False,
        # Recycle pool processes to bound slow leaks; 0 turns it off.
        "worker_max_tasks_per_child": env_int("CELERY_MAX_TASKS_PER_CHILD", 1000)
        or None,
        "task_default_queue": "default",
    }

{% endif %}
class BaseConfig:
    """Settings shared by every environment."""

    ENV_NAME: ClassVar[str] = "base"

    def __init__(self) -> None:
        self.SECRET_KEY = env_str("SECRET_KEY")
        self.SQLALCHEMY_DATABASE_URI = env_str(
            "DATABASE_URL", self.default_database_url()
        )
        self.SQLALCHEMY_RECORD_QUERIES = False
        self.MAX_CONTENT_LENGTH = env_int("MAX_CONTENT_LENGTH", 1024 * 1024)
        self.TRUSTED_HOSTS = env_list("TRUSTED_HOSTS")
        self.LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
        self.LOG_JSON = False
        self.READINESS_TIMEOUT_SECONDS = env_int("READINESS_TIMEOUT_SECONDS", 2)
        self.BACKGROUND_THREADS = env_int("BACKGROUND_THREADS", 4)
        # A token's last_used_at is written at most this often, and a token
        # verified by a process is trusted by it this long (so a revocation
        # takes up to that long to reach every process; see accounts).
        self.TOKEN_LAST_USED_RESOLUTION_SECONDS = env_int(
            "TOKEN_LAST_USED_RESOLUTION_SECONDS", 60
        )
        self.TOKEN_CACHE_SECONDS = env_int("TOKEN_CACHE_SECONDS", 5)
        # Reverse proxies in front of the app (nginx is one). Forwarded
        # headers are trusted from exactly this many hops, never more.
        self.PROXY_HOPS = env_int("PROXY_HOPS", self.default_proxy_hops())
        # Error reports to Sentry, off without a DSN (see sentry.py).
        self.SENTRY_DSN = env_str("SENTRY_DSN")
        self.SENTRY_ENVIRONMENT = env_str("SENTRY_ENVIRONMENT", self.ENV_NAME)
        self.SENTRY_RELEASE = env_str("SENTRY_RELEASE")
        self.SENTRY_TRACES_SAMPLE_RATE = env_fraction("SENTRY_TRACES_SAMPLE_RATE", 0.0)
        # Prometheus metrics at /metrics (see the README's Metrics section).
        self.METRICS_ENABLED = env_flag("METRICS_ENABLED", True)
        # What a request may leave on g (see http/g_guard.py): off, warn, fail.
        self.G_SIZE_CHECK = env_str(
            "G_SIZE_CHECK",
            {"development": "warn", "testing": "fail"}.get(self.ENV_NAME, "off"),
        )
        self.G_SIZE_LIMIT_BYTES = env_int("G_SIZE_LIMIT_BYTES", 1024 * 1024)
{%- if cookiecutter.use_celery == "y" %}
        self.REDIS_URL = env_str("REDIS_URL")
        self.CELERY = celery_settings(self.REDIS_URL)
        self.JOB_RETENTION_DAYS = env_int("JOB_RETENTION_DAYS", 7)
        # Stuck jobs (see jobs/reaper.py): unset derives the deadline from
        # the task time limits and retry policy; a job is sent again at most
        # JOB_MAX_REQUEUES times, then failed.
        self.JOB_DEADLINE_SECONDS = env_optional_int("JOB_DEADLINE_SECONDS")
        self.JOB_MAX_REQUEUES = env_int("JOB_MAX_REQUEUES", 3)
        # Background exports: files in EXPORT_DIR (default instance/exports),
        # served by nginx through X-Accel-Redirect when EXPORT_X_ACCEL is on.
        self.EXPORT_DIR = env_str("EXPORT_DIR")
        self.EXPORT_X_ACCEL = env_flag("EXPORT_X_ACCEL", self.ENV_NAME == "production")
        self.EXPORT_ACCEL_PREFIX = env_str("EXPORT_ACCEL_PREFIX", "/_exports/")
        self.EXPORT_TTL_HOURS = env_int("EXPORT_TTL_HOURS", 24)
        # How long a signed download link stays valid.
        self.EXPORT_DOWNLOAD_URL_TTL_SECONDS = env_int(
            "EXPORT_DOWNLOAD_URL_TTL_SECONDS", 600
        )
        # The Celery worker's own /metrics endpoint; port 0 turns it off.
        self.WORKER_METRICS_PORT = env_int("WORKER_METRICS_PORT", 0)
        self.WORKER_METRICS_HOST = env_str("WORKER_METRICS_HOST", "127.0.0.1")
{%- endif %}
        # Abuse limits on /api/ (see http/limits.py), as Flask-Limiter rate
        # strings: "10 per minute", "100/hour;1000/day".
        self.RATELIMIT_ENABLED = env_flag("RATELIMIT_ENABLED", True)
        self.RATELIMIT_FAILED_AUTH = env_str("RATELIMIT_FAILED_AUTH", "10 per minute")
        self.RATELIMIT_PER_TOKEN = env_str("RATELIMIT_PER_TOKEN", "1200 per minute")
{%- if cookiecutter.use_celery == "y" %}
        # Counted in Redis when there is one, shared by every process, under
        # Celery's key prefix: one prefix keeps a deployment's keys apart.
        self.RATELIMIT_STORAGE_URI = env_str(
            "RATELIMIT_STORAGE_URI", self.REDIS_URL or "memory://"
        )
        self.RATELIMIT_KEY_PREFIX = env_str(
            "RATELIMIT_KEY_PREFIX", (env_str("CELERY_KEY_PREFIX") or "") + "limits"
        )
{%- else %}
        # memory:// counts in each process.
        self.RATELIMIT_STORAGE_URI = env_str("RATELIMIT_STORAGE_URI", "memory://")
{%- endif %}
        # Browser apps on these origins may call /api/ (see http/cors.py).
        self.CORS_ORIGINS = env_list("CORS_ORIGINS")
        self.CORS_ALLOW_CREDENTIALS = env_flag("CORS_ALLOW_CREDENTIALS", False)
        self.CORS_MAX_AGE = env_int("CORS_MAX_AGE", 600)
        # The API's docs page, /api/docs (the document, /api/openapi.json,
        # is always served): off in production unless turned on.
        self.API_DOCS = env_flag("API_DOCS", self.ENV_NAME != "production")

    def default_database_url(self) -> str | None:
        return None

    def default_proxy_hops(self) -> int:
        return 0

    @staticmethod
    def validate(config: Mapping[str, Any]) -> None:
        """Raise ConfigError naming the first unusable variable."""


class DevelopmentConfig(BaseConfig):
    ENV_NAME = "development"

    def __init__(self) -> None:
        super().__init__()
        self.SECRET_KEY = self.SECRET_KEY or "dev-only-not-secret"

    def default_database_url(self) -> str:
        return "sqlite:///development.db"


class TestingConfig(BaseConfig):
    ENV_NAME = "testing"

    def __init__(self) -> None:
        super().__init__()
        self.TESTING = True
        # Let unhandled errors reach the error handler, so tests see the
        # same problem+json 500 a client would.
        self.PROPAGATE_EXCEPTIONS = False
        self.SECRET_KEY = "testing-only-not-secret"  # noqa: S105
        # Revocations take effect at once in tests; test_auth turns it on.
        self.TOKEN_CACHE_SECONDS = 0

    def default_database_url(self) -> str:
        return "sqlite:///testing.db"


class ProductionConfig(BaseConfig):
    ENV_NAME = "production"

    def __init__(self) -> None:
        super().__init__()
        self.DEBUG = False
        self.LOG_JSON = True
        self.SESSION_COOKIE_SECURE = True
        self.SESSION_COOKIE_HTTPONLY = True
        self.SESSION_COOKIE_SAMESITE = "Lax"
        self.PREFERRED_URL_SCHEME = "https"

    def default_proxy_hops(self) -> int:
        return 1  # nginx, as shipped in deploy/nginx

    @staticmethod
    def validate(config: Mapping[str, Any]) -> None:
        secret_key = config.get("SECRET_KEY")
        if not secret_key:
            raise ConfigError("SECRET_KEY is not set; production needs one")
        if secret_key == EXAMPLE_SECRET_KEY:
            raise ConfigError("SECRET_KEY is still the example value; generate one")
        if len(secret_key) < MIN_SECRET_KEY_LENGTH:
            raise ConfigError(
                f"SECRET_KEY is too short ({len(secret_key)} characters; "
                f"at least {MIN_SECRET_KEY_LENGTH} needed)"
            )
        if not config.get("SQLALCHEMY_DATABASE_URI"):
            raise ConfigError("DATABASE_URL is not set; production needs one")
{%- if cookiecutter.use_celery == "y" %}
        if not config["CELERY"].get("broker_url"):
            raise ConfigError("REDIS_URL is not set; production needs a broker")
{%- endif %}


CONFIGS: dict[str, type[BaseConfig]] = {
    cls.ENV_NAME: cls for cls in (DevelopmentConfig, TestingConfig, ProductionConfig)
}


def app_env() -> str:
    return env_str("APP_ENV", "production") or "production"


def load_config(name: str | None = None) -> BaseConfig:
    """Build the config object for ``name`` (default: ``APP_ENV``)."""
    name = name or app_env()
    try:
        config_class = CONFIGS[name]
    except KeyError:
        choices = ", ".join(sorted(CONFIGS))
        raise ConfigError(f"APP_ENV must be one of {choices}, got {name!r}") from None
    return config_class()


{% if cookiecutter.use_celery == "y" -%}
def redis_rate_limit_options(key_prefix: str) -> dict[str, Any]:
    """Rate-limit counts in Redis: every key under ``key_prefix``, and an
    answer within half a second or the request goes on without it."""
    return {
        "key_prefix": key_prefix,
        "socket_connect_timeout": 0.5,
        "socket_timeout": 0.5,
    }


{% endif -%}
# An origin as browsers send it: scheme, host, optional port; no path.
ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")


def validate_rate_limits(config: Mapping[str, Any]) -> None:
    """Refuse a rate string Flask-Limiter could not parse: at request time
    it would only be logged, and the limit silently not applied."""
    if not config.get("RATELIMIT_ENABLED"):
        return
    for name in ("RATELIMIT_FAILED_AUTH", "RATELIMIT_PER_TOKEN"):
        value = config.get(name)
        try:
            parse_many(value or "")
        except ValueError:
            raise ConfigError(
                f"{name} must be a rate such as '10 per minute', got {value!r}"
            ) from None


def validate_cors(config: MutableMapping[str, Any]) -> None:
    """Leave ``CORS_ORIGINS`` a list of exact origins, or ``["*"]``.

    A wildcard with credentials is refused in every environment: any site
    could then make requests carrying a user's cookies or HTTP credentials.
    """
    origins = config.get("CORS_ORIGINS") or []
    if isinstance(origins, str):
        origins = [item.strip() for item in origins.split(",") if item.strip()]
    origins = list(origins)
    for origin in origins:
        if origin != "*" and not ORIGIN.fullmatch(origin):
            raise ConfigError(
                f"CORS_ORIGINS: {origin!r} is not an origin; give scheme://host"
                "[:port] without a path or trailing slash, or * alone"
            )
    if "*" in origins and len(origins) > 1:
        raise ConfigError("CORS_ORIGINS: * allows every origin; give it alone")
    if "*" in origins and config.get("CORS_ALLOW_CREDENTIALS"):
        raise ConfigError(
            "CORS_ALLOW_CREDENTIALS cannot be on with CORS_ORIGINS=*: every "
            "site could send requests with your users' credentials; list "
            "the origins instead"
        )
    config["CORS_ORIGINS"] = origins


def finalize(config: MutableMapping[str, Any], config_class: type[BaseConfig]) -> None:
    """Derive what depends on the final values, then validate them.

    Runs after every override, so a ``FLASK_SQLALCHEMY_DATABASE_URI`` or a
    test's URI gets the same normalisation and pool settings as DATABASE_URL.
    """
    uri = config.get("SQLALCHEMY_DATABASE_URI")
    if uri:
        config["SQLALCHEMY_DATABASE_URI"] = uri = normalize_database_url(uri)
        config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", engine_options(uri))
{%- if cookiecutter.use_celery == "y" %}
    if config.get("RATELIMIT_STORAGE_URI", "").startswith("redis"):
        config.setdefault(
            "RATELIMIT_STORAGE_OPTIONS",
            redis_rate_limit_options(config["RATELIMIT_KEY_PREFIX"]),
        )
{%- endif %}
    validate_rate_limits(config)
    validate_cors(config)
    config_class.validate(config)
