"""Settings, one typed class per environment, the only code that reads them.

``APP_ENV`` picks the class (``development``, ``testing``, ``production``;
unset means production, so a forgotten variable fails closed). Each field
is read from the variable of the same name; a ``FLASK_``-prefixed variable
(``FLASK_MAX_CONTENT_LENGTH=2097152``), then the overrides a test passes to
``create_app``, take precedence and are checked the same way. A value that
cannot be used stops the app with :class:`ConfigError`, naming the variable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from flask import Config
from limits import parse_many
from pydantic import BeforeValidator, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

EXAMPLE_SECRET_KEY = "change-me-to-a-long-random-string"  # noqa: S105 - refused
MIN_SECRET_KEY_LENGTH = 32
# A connect argument the app reads and libpq never sees (see database.py).
ANSWER_TIMEOUT = "answer_timeout"
# An origin as browsers send it: scheme, host, optional port; no path.
ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")
# Flask config keys whose setting has another name.
FLASK_KEYS = {"SQLALCHEMY_DATABASE_URI": "DATABASE_URL"}


class ConfigError(RuntimeError):
    """The environment does not describe a runnable configuration."""


def comma_list(value: Any) -> Any:
    """``a, b,c`` as ``["a", "b", "c"]``; a list (from a test) as given."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()] or None
    return value


def fraction(value: Any) -> float:
    """A number from 0 to 1, such as a sampling rate."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if not 0 <= number <= 1:  # nan and inf fail this too
        raise ValueError(f"must be a number from 0 to 1, got {value!r}")
    return number


def rate(value: Any) -> str:
    """A rate string of ``limits`` ("10 per minute", "100/hour;1000/day"):
    one it could not parse would only be logged at request time, and the
    limit silently not applied."""
    try:
        parse_many(str(value))
    except ValueError:
        message = f"must be a rate such as '10 per minute', got {value!r}"
        raise ValueError(message) from None
    return str(value)


def origins(value: Any) -> list[str] | None:
    """Exact origins, or ``*`` alone."""
    items = comma_list(value)
    for origin in items or ():
        if origin != "*" and not ORIGIN.fullmatch(origin):
            raise ValueError(
                f": {origin!r} is not an origin; give scheme://host[:port] "
                "without a path or trailing slash, or * alone"
            )
    if items and "*" in items and len(items) > 1:
        raise ValueError(": * allows every origin; give it alone")
    return list(items) if items else None


Names = Annotated[list[str] | None, NoDecode, BeforeValidator(comma_list)]
Origins = Annotated[list[str] | None, NoDecode, BeforeValidator(origins)]
Fraction = Annotated[float, BeforeValidator(fraction)]
Rate = Annotated[str, BeforeValidator(rate)]
Seconds = Annotated[int, Field(ge=0)]


class Settings(BaseSettings):
    """Settings shared by every environment, each read from its variable."""

    model_config = SettingsConfigDict(
        case_sensitive=True, env_ignore_empty=True, str_strip_whitespace=True
    )

    ENV_NAME: ClassVar[str] = "base"
    # Flask settings that are no variable's: a FLASK_ override changes them.
    FLASK: ClassVar[dict[str, Any]] = {
        "SQLALCHEMY_RECORD_QUERIES": False,
        "LOG_JSON": False,
    }

    SECRET_KEY: str | None = None
    DATABASE_URL: str | None = None
    MAX_CONTENT_LENGTH: int = 1024 * 1024
    TRUSTED_HOSTS: Names = None
    LOG_LEVEL: str = "INFO"
    READINESS_TIMEOUT_SECONDS: Seconds = 2
    BACKGROUND_THREADS: int = Field(4, ge=1)
    # A token's last_used_at is written at most this often, and a token
    # verified by a process is trusted by it this long (so a revocation
    # takes up to that long to reach every process; see accounts).
    TOKEN_LAST_USED_RESOLUTION_SECONDS: Seconds = 60
    TOKEN_CACHE_SECONDS: Seconds = 5
    # Reverse proxies in front of the app (nginx is one). Forwarded headers
    # are trusted from exactly this many hops, never more.
    PROXY_HOPS: int = Field(0, ge=0)
    # Error reports to Sentry, off without a DSN (see sentry.py); the
    # environment defaults to APP_ENV.
    SENTRY_DSN: str | None = None
    SENTRY_ENVIRONMENT: str | None = None
    SENTRY_RELEASE: str | None = None
    SENTRY_TRACES_SAMPLE_RATE: Fraction = 0.0
    # Prometheus metrics at /metrics (see the README's Metrics section).
    METRICS_ENABLED: bool = True
    # What a request may leave on g (see http/g_guard.py).
    G_SIZE_CHECK: Literal["off", "warn", "fail"] = "off"
    G_SIZE_LIMIT_BYTES: int = Field(1024 * 1024, ge=1)

    # Database pool and bounded waits (see engine_options).
    DATABASE_POOL_RECYCLE: Seconds = 1800
    DATABASE_POOL_SIZE: int = Field(5, ge=1)
    DATABASE_MAX_OVERFLOW: int = Field(5, ge=0)
    DATABASE_POOL_TIMEOUT: Seconds = 10
    DATABASE_BUSY_TIMEOUT: Seconds = 5
    DATABASE_STATEMENT_TIMEOUT: Seconds = 10
    # Unset: the statement timeout plus 5 s (0 when that is 0).
    DATABASE_ANSWER_TIMEOUT: Seconds | None = None
    DATABASE_CONNECT_TIMEOUT: Seconds = 3
    DATABASE_APPLICATION_NAME: str = "web"
    DATABASE_KEEPALIVES_IDLE: int = Field(30, ge=1)
    # Unset: the answer timeout.
    DATABASE_TCP_USER_TIMEOUT: Seconds | None = None
{%- if cookiecutter.use_celery == "y" %}

    # Redis: Celery's broker and result store, and the rate-limit counts.
    REDIS_URL: str | None = None
    CELERY_BROKER_URL: str | None = None  # unset: REDIS_URL
    CELERY_RESULT_BACKEND: str | None = None  # unset: REDIS_URL
    CELERY_KEY_PREFIX: str | None = None
    CELERY_TASK_TIME_LIMIT: int = Field(600, ge=1)
    CELERY_TASK_SOFT_TIME_LIMIT: int | None = None  # unset: 60 s below the hard one
    CELERY_VISIBILITY_TIMEOUT: int | None = None  # unset: twice the hard limit
    CELERY_BROKER_TIMEOUT_SECONDS: int = Field(3, ge=1)
    CELERY_RESULT_EXPIRES: Seconds = 24 * 3600
    # Recycle pool processes to bound slow leaks; 0 turns it off.
    CELERY_MAX_TASKS_PER_CHILD: Seconds = 1000
    JOB_RETENTION_DAYS: int = Field(7, ge=1)
    # Stuck jobs (see jobs/reaper.py): unset derives the deadline from the
    # task time limits and retry policy; a job is sent again at most
    # JOB_MAX_REQUEUES times, then failed.
    JOB_DEADLINE_SECONDS: int | None = Field(None, ge=1)
    JOB_MAX_REQUEUES: Seconds = 3
    # Background exports: files in EXPORT_DIR (default instance/exports),
    # served by nginx through X-Accel-Redirect when EXPORT_X_ACCEL is on.
    EXPORT_DIR: str | None = None
    EXPORT_X_ACCEL: bool = False
    EXPORT_ACCEL_PREFIX: str = "/_exports/"
    EXPORT_TTL_HOURS: int = Field(24, ge=1)
    # How long a signed download link stays valid.
    EXPORT_DOWNLOAD_URL_TTL_SECONDS: int = Field(600, ge=1)
    # The Celery worker's own /metrics endpoint; port 0 turns it off.
    WORKER_METRICS_PORT: int = Field(0, ge=0, le=65535)
    WORKER_METRICS_HOST: str = "127.0.0.1"
{%- endif %}

    # Abuse limits on /api/ (see http/limits.py).
    RATELIMIT_ENABLED: bool = True
    RATELIMIT_FAILED_AUTH: Rate = "10 per minute"
    RATELIMIT_PER_TOKEN: Rate = "1200 per minute"  # noqa: S105 - a rate
{%- if cookiecutter.use_celery == "y" %}
    # Unset: Redis when there is one, shared by every process, under
    # Celery's key prefix (one prefix keeps a deployment's keys apart);
    # memory:// counts in each process.
    RATELIMIT_STORAGE_URI: str | None = None
    RATELIMIT_KEY_PREFIX: str | None = None
{%- else %}
    # memory:// counts in each process.
    RATELIMIT_STORAGE_URI: str = "memory://"
{%- endif %}
    # Browser apps on these origins may call /api/ (see http/cors.py).
    CORS_ORIGINS: Origins = None
    CORS_ALLOW_CREDENTIALS: bool = False
    CORS_MAX_AGE: Seconds = 600
    # The API's docs page, /api/docs (the document, /api/openapi.json, is
    # always served): off in production unless turned on.
    API_DOCS: bool = True

    @model_validator(mode="after")
    def derive_and_check(self) -> Settings:
        """Fill the defaults that depend on other values, then refuse
        combinations that cannot work."""
        self.SENTRY_ENVIRONMENT = self.SENTRY_ENVIRONMENT or self.ENV_NAME
        if self.DATABASE_ANSWER_TIMEOUT is None:
            statement = self.DATABASE_STATEMENT_TIMEOUT
            self.DATABASE_ANSWER_TIMEOUT = statement + 5 if statement else 0
        if self.DATABASE_TCP_USER_TIMEOUT is None:
            self.DATABASE_TCP_USER_TIMEOUT = self.DATABASE_ANSWER_TIMEOUT
        if self.CORS_ORIGINS == ["*"] and self.CORS_ALLOW_CREDENTIALS:
            raise ValueError(
                "CORS_ALLOW_CREDENTIALS cannot be on with CORS_ORIGINS=*: every "
                "site could send requests with your users' credentials; list "
                "the origins instead"
            )
{%- if cookiecutter.use_celery == "y" %}
        self.CELERY_BROKER_URL = self.CELERY_BROKER_URL or self.REDIS_URL
        self.CELERY_RESULT_BACKEND = self.CELERY_RESULT_BACKEND or self.REDIS_URL
        hard = self.CELERY_TASK_TIME_LIMIT
        if self.CELERY_TASK_SOFT_TIME_LIMIT is None:
            self.CELERY_TASK_SOFT_TIME_LIMIT = hard - 60
        if self.CELERY_VISIBILITY_TIMEOUT is None:
            self.CELERY_VISIBILITY_TIMEOUT = hard * 2
        soft = self.CELERY_TASK_SOFT_TIME_LIMIT
        visibility = self.CELERY_VISIBILITY_TIMEOUT
        if not 0 < soft < hard:
            raise ValueError(
                "CELERY_TASK_SOFT_TIME_LIMIT must be positive and below "
                f"CELERY_TASK_TIME_LIMIT ({soft} >= {hard})"
            )
        if visibility <= hard:
            raise ValueError(
                "CELERY_VISIBILITY_TIMEOUT must exceed CELERY_TASK_TIME_LIMIT "
                f"({visibility} <= {hard})"
            )
        if self.RATELIMIT_STORAGE_URI is None:
            self.RATELIMIT_STORAGE_URI = self.REDIS_URL or "memory://"
        if self.RATELIMIT_KEY_PREFIX is None:
            self.RATELIMIT_KEY_PREFIX = (self.CELERY_KEY_PREFIX or "") + "limits"
{%- endif %}
        return self

    def refuse_unsafe(self) -> None:
        """Raise ConfigError naming the first variable this environment
        cannot run without (production only)."""

    def flask_config(self) -> dict[str, Any]:
        """The app's config: every setting, under Flask's names where they
        differ, with the engine options the database URL needs."""
        values: dict[str, Any] = {**self.FLASK, **self.model_dump()}
        uri = values.pop("DATABASE_URL")
        if uri:
            uri = normalize_database_url(uri)
            values["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(uri, self)
        values["SQLALCHEMY_DATABASE_URI"] = uri
{%- if cookiecutter.use_celery == "y" %}
        if str(self.RATELIMIT_STORAGE_URI).startswith("redis"):
            # An answer within half a second, or the request goes on without.
            values["RATELIMIT_STORAGE_OPTIONS"] = {
                "key_prefix": self.RATELIMIT_KEY_PREFIX,
                "socket_connect_timeout": 0.5,
                "socket_timeout": 0.5,
            }
{%- endif %}
        values["APP_ENV"] = self.ENV_NAME
        return values


class DevelopmentSettings(Settings):
    ENV_NAME = "development"

    SECRET_KEY: str | None = "dev-only-not-secret"  # noqa: S105
    DATABASE_URL: str | None = "sqlite:///development.db"
    G_SIZE_CHECK: Literal["off", "warn", "fail"] = "warn"


class TestingSettings(Settings):
    ENV_NAME = "testing"
    FLASK: ClassVar[dict[str, Any]] = {
        **Settings.FLASK,
        "TESTING": True,
        # Let unhandled errors reach the error handler, so tests see the
        # same problem+json 500 a client would.
        "PROPAGATE_EXCEPTIONS": False,
    }

    # A known key, and revocations that take effect at once (test_auth
    # turns the cache on).
    SECRET_KEY: str | None = "testing-only-not-secret"  # noqa: S105
    TOKEN_CACHE_SECONDS: Seconds = 0
    DATABASE_URL: str | None = "sqlite:///testing.db"
    G_SIZE_CHECK: Literal["off", "warn", "fail"] = "fail"


class ProductionSettings(Settings):
    ENV_NAME = "production"
    FLASK: ClassVar[dict[str, Any]] = {
        **Settings.FLASK,
        "DEBUG": False,
        "LOG_JSON": True,
        "SESSION_COOKIE_SECURE": True,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "PREFERRED_URL_SCHEME": "https",
    }

    PROXY_HOPS: int = Field(1, ge=0)  # nginx, as shipped in deploy/nginx
    API_DOCS: bool = False
{%- if cookiecutter.use_celery == "y" %}
    EXPORT_X_ACCEL: bool = True
{%- endif %}

    def refuse_unsafe(self) -> None:
        secret_key = self.SECRET_KEY
        if not secret_key:
            raise ConfigError("SECRET_KEY is not set; production needs one")
        if secret_key == EXAMPLE_SECRET_KEY:
            raise ConfigError("SECRET_KEY is still the example value; generate one")
        if len(secret_key) < MIN_SECRET_KEY_LENGTH:
            raise ConfigError(
                f"SECRET_KEY is too short ({len(secret_key)} characters; "
                f"at least {MIN_SECRET_KEY_LENGTH} needed)"
            )
        if not self.DATABASE_URL:
            raise ConfigError("DATABASE_URL is not set; production needs one")
{%- if cookiecutter.use_celery == "y" %}
        if not self.CELERY_BROKER_URL:
            raise ConfigError("REDIS_URL is not set; production needs a broker")
{%- endif %}


SETTINGS: dict[str, type[Settings]] = {
    cls.ENV_NAME: cls
    for cls in (DevelopmentSettings, TestingSettings, ProductionSettings)
}


class ProcessSettings(BaseSettings):
    """What a process reads before it picks its settings class."""

    model_config = SettingsConfigDict(
        case_sensitive=True, env_ignore_empty=True, str_strip_whitespace=True
    )

    APP_ENV: str = "production"
    # Local data (the SQLite file) lives here, relative to the working
    # directory.
    INSTANCE_PATH: str = "instance"
    # OpenTelemetry's own variables that turn tracing on or off (tracing.py).
    OTEL_SDK_DISABLED: bool = False
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: str | None = None
    OTEL_EXPORTER_OTLP_ENDPOINT: str | None = None


def app_env() -> str:
    """``APP_ENV``, production when unset."""
    return ProcessSettings().APP_ENV


def flask_overrides() -> dict[str, Any]:
    """The ``FLASK_``-prefixed variables, without the prefix, read as JSON
    where they parse (Flask's own rule)."""
    found = Config("")
    found.from_prefixed_env()
    return dict(found)


def load_settings(
    env_name: str | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """The settings of ``env_name`` (default ``APP_ENV``): each field from
    ``overrides``, else its variable, else its default."""
    env_name = env_name or app_env()
    try:
        settings_class = SETTINGS[env_name]
    except KeyError:
        choices = ", ".join(sorted(SETTINGS))
        raise ConfigError(
            f"APP_ENV must be one of {choices}, got {env_name!r}"
        ) from None
    fields = {
        FLASK_KEYS.get(key, key): value
        for key, value in (overrides or {}).items()
        if FLASK_KEYS.get(key, key) in settings_class.model_fields
    }
    try:
        return settings_class(**fields)
    except ValidationError as exc:
        raise ConfigError(describe(exc.errors()[0])) from None


def build_config(
    env_name: str, overrides: Mapping[str, Any] | None = None, *, strict: bool = True
) -> dict[str, Any]:
    """The Flask config of ``env_name``: settings, then ``FLASK_`` variables,
    then ``overrides``. ``strict`` refuses what production cannot run with;
    ``flask check-deploy`` reports it instead."""
    given = {**flask_overrides(), **(overrides or {})}
    settings = load_settings(env_name, given)
    if strict:
        settings.refuse_unsafe()
    # Keys that are no setting's (DEBUG, SESSION_COOKIE_SECURE...) as given.
    read = set(type(settings).model_fields) | set(FLASK_KEYS)
    config = settings.flask_config()
    config.update({key: value for key, value in given.items() if key not in read})
    return config


def describe(error: ErrorDetails) -> str:
    """One line naming the variable and what is wrong with its value."""
    name = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    kind, context = error["type"], error.get("ctx", {})
    if kind == "value_error":  # ours: the message says what is wrong
        separator = "" if message.startswith(":") else " "
        return f"{name}{separator}{message}".strip()
    wanted = {
        "int_parsing": "must be an integer",
        "int_from_float": "must be an integer",
        "int_type": "must be an integer",
        "bool_parsing": "must be true or false",
        "bool_type": "must be true or false",
        "greater_than_equal": f"must be at least {context.get('ge')}",
        "less_than_equal": f"must be at most {context.get('le')}",
        "literal_error": f"must be one of {context.get('expected')}",
    }.get(kind, message[:1].lower() + message[1:])
    return f"{name} {wanted}, got {error['input']!r}"


def normalize_database_url(url: str) -> str:
    """Accept the ``postgres://`` and ``postgresql://`` forms hosting providers
    hand out, and point them at the psycopg 3 driver SQLAlchemy needs."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def engine_options(url: str, settings: Settings) -> dict[str, Any]:
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
        "pool_recycle": settings.DATABASE_POOL_RECYCLE,
        "pool_size": settings.DATABASE_POOL_SIZE,
        "max_overflow": settings.DATABASE_MAX_OVERFLOW,
        "pool_timeout": settings.DATABASE_POOL_TIMEOUT,
    }
    if url.startswith("sqlite"):
        options["connect_args"] = {"timeout": settings.DATABASE_BUSY_TIMEOUT}
    if url.startswith("postgresql"):
        statement_timeout = settings.DATABASE_STATEMENT_TIMEOUT
        options["connect_args"] = {
            "connect_timeout": settings.DATABASE_CONNECT_TIMEOUT,
            "application_name": settings.DATABASE_APPLICATION_NAME,
            # ISO DateStyle whatever the server's default: psycopg reads
            # dates only in it, and the exports write timestamps in it.
            "options": (
                f"-c statement_timeout={statement_timeout * 1000} -c datestyle=ISO"
            ),
            "keepalives": 1,
            "keepalives_idle": settings.DATABASE_KEEPALIVES_IDLE,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "tcp_user_timeout": (settings.DATABASE_TCP_USER_TIMEOUT or 0) * 1000,
            # Not a libpq parameter: database.py takes it out (see there).
            ANSWER_TIMEOUT: settings.DATABASE_ANSWER_TIMEOUT,
        }
    return options
