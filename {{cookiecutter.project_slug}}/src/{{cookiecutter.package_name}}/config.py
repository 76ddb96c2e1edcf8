"""Configuration classes, one per environment, read from the environment.

``APP_ENV`` picks the class (``development``, ``testing``, ``production``;
unset means production, so a forgotten variable fails closed). Any
``FLASK_``-prefixed variable then overrides a key, for example
``FLASK_MAX_CONTENT_LENGTH=2097152``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from typing import Any, ClassVar

EXAMPLE_SECRET_KEY = "change-me-to-a-long-random-string"  # noqa: S105 - refused
MIN_SECRET_KEY_LENGTH = 32


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
    """Pool settings: check connections before use, recycle them before
    servers or proxies drop idle ones, bound the pool per process."""
    if url in ("sqlite://", "sqlite:///:memory:"):
        return {}  # one shared in-memory connection; nothing to size
    options: dict[str, Any] = {
        "pool_pre_ping": True,
        "pool_recycle": env_int("DATABASE_POOL_RECYCLE", 1800),
        "pool_size": env_int("DATABASE_POOL_SIZE", 5),
        "max_overflow": env_int("DATABASE_MAX_OVERFLOW", 5),
        "pool_timeout": env_int("DATABASE_POOL_TIMEOUT", 10),
    }
    if url.startswith("postgresql"):
        options["connect_args"] = {
            "connect_timeout": env_int("DATABASE_CONNECT_TIMEOUT", 3),
            "application_name": env_str("DATABASE_APPLICATION_NAME", "web"),
        }
    return options


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

    def default_database_url(self) -> str | None:
        return None

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


def finalize(config: MutableMapping[str, Any], config_class: type[BaseConfig]) -> None:
    """Derive what depends on the final values, then validate them.

    Runs after every override, so a ``FLASK_SQLALCHEMY_DATABASE_URI`` or a
    test's URI gets the same normalisation and pool settings as DATABASE_URL.
    """
    uri = config.get("SQLALCHEMY_DATABASE_URI")
    if uri:
        config["SQLALCHEMY_DATABASE_URI"] = uri = normalize_database_url(uri)
        config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", engine_options(uri))
    config_class.validate(config)
