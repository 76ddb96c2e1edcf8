"""Config selection, overrides and production's refusal to start unsafely."""

from __future__ import annotations

from pathlib import Path

import pytest

from {{ cookiecutter.package_name }} import config, create_app
from {{ cookiecutter.package_name }}.config import (
    ANSWER_TIMEOUT,
    EXAMPLE_SECRET_KEY,
    ConfigError,
    engine_options,
    load_settings,
    normalize_database_url,
)

GOOD_SECRET = "x" * 48


@pytest.fixture
def production_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("SECRET_KEY", GOOD_SECRET)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'prod.db'}")
{%- if cookiecutter.use_celery == "y" %}
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
{%- endif %}


@pytest.mark.parametrize(
    ("app_env", "expected"),
    [
        ("development", config.DevelopmentSettings),
        ("testing", config.TestingSettings),
        ("production", config.ProductionSettings),
    ],
)
def test_app_env_picks_the_config_class(
    monkeypatch: pytest.MonkeyPatch, app_env: str, expected: type
) -> None:
    monkeypatch.setenv("APP_ENV", app_env)
    assert type(load_settings()) is expected


def test_unset_app_env_means_production() -> None:
    assert type(load_settings()) is config.ProductionSettings


def test_unknown_app_env_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "staging")
    with pytest.raises(ConfigError, match=r"APP_ENV must be one of .*'staging'"):
        create_app()


@pytest.mark.usefixtures("production_env")
def test_production_starts_with_a_complete_environment() -> None:
    app = create_app()
    assert app.config["APP_ENV"] == "production"
    assert app.debug is False
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["SESSION_COOKIE_HTTPONLY"] is True
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Lax"
    assert app.config["MAX_CONTENT_LENGTH"] == 1024 * 1024
    assert app.config["LOG_JSON"] is True


@pytest.mark.usefixtures("production_env")
@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (None, "SECRET_KEY is not set"),
        ("", "SECRET_KEY is not set"),
        ("short-secret", "SECRET_KEY is too short"),
        (EXAMPLE_SECRET_KEY, "SECRET_KEY is still the example value"),
    ],
)
def test_production_refuses_a_bad_secret_key(
    monkeypatch: pytest.MonkeyPatch, secret: str | None, message: str
) -> None:
    if secret is None:
        monkeypatch.delenv("SECRET_KEY")
    else:
        monkeypatch.setenv("SECRET_KEY", secret)
    with pytest.raises(ConfigError, match=message):
        create_app()


@pytest.mark.usefixtures("production_env")
def test_production_refuses_a_missing_database_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DATABASE_URL")
    with pytest.raises(ConfigError, match="DATABASE_URL is not set"):
        create_app()


@pytest.mark.usefixtures("production_env")
def test_trusted_hosts_reject_other_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUSTED_HOSTS", "api.example.com, .example.org")
    app = create_app()
    assert app.config["TRUSTED_HOSTS"] == ["api.example.com", ".example.org"]
    client = app.test_client()
    assert client.get("/healthz", base_url="https://api.example.com").status_code == 200
    assert client.get("/healthz", base_url="https://eu.example.org").status_code == 200
    refused = client.get("/healthz", base_url="https://evil.example.net")
    assert refused.status_code == 400
    assert refused.mimetype == "application/problem+json"


def test_flask_prefixed_variables_override_config(
    monkeypatch: pytest.MonkeyPatch, make_app
) -> None:
    monkeypatch.setenv("FLASK_MAX_CONTENT_LENGTH", "2048")
    assert make_app().config["MAX_CONTENT_LENGTH"] == 2048


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MAX_CONTENT_LENGTH", "lots", "must be an integer, got 'lots'"),
        ("METRICS_ENABLED", "maybe", "must be true or false, got 'maybe'"),
        ("DATABASE_POOL_SIZE", "0", "must be at least 1, got '0'"),
        ("G_SIZE_CHECK", "loud", "must be one of 'off', 'warn' or 'fail'"),
        ("TRUSTED_HOSTS", " , ", None),
    ],
)
def test_a_malformed_variable_is_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str | None
) -> None:
    monkeypatch.setenv(name, value)
    if message is None:  # blank is unset
        assert getattr(load_settings("testing"), name) is None
        return
    with pytest.raises(ConfigError, match=f"^{name} {message}"):
        load_settings("testing")


def test_flask_prefixed_variables_are_checked_like_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLASK_MAX_CONTENT_LENGTH", "lots")
    with pytest.raises(ConfigError, match="MAX_CONTENT_LENGTH must be an integer"):
        create_app({"APP_ENV": "testing"})


def test_test_overrides_win_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, make_app
) -> None:
    monkeypatch.setenv("MAX_CONTENT_LENGTH", "4096")
    monkeypatch.setenv("FLASK_MAX_CONTENT_LENGTH", "2048")
    assert make_app().config["MAX_CONTENT_LENGTH"] == 2048
    assert make_app(MAX_CONTENT_LENGTH=1024).config["MAX_CONTENT_LENGTH"] == 1024


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db:5432/app", "postgresql+psycopg://u:p@db:5432/app"),
        ("postgresql://u@db/app", "postgresql+psycopg://u@db/app"),
        ("postgresql+psycopg://u@db/app", "postgresql+psycopg://u@db/app"),
        ("sqlite:///app.db", "sqlite:///app.db"),
    ],
)
def test_database_url_accepts_the_pasted_forms(given: str, expected: str) -> None:
    assert normalize_database_url(given) == expected


def test_engine_options_come_from_settings(make_app) -> None:
    options = make_app().config["SQLALCHEMY_ENGINE_OPTIONS"]
    assert options["pool_pre_ping"] is True
    assert options["pool_recycle"] == 1800
    assert options["pool_size"] == 5


def test_every_database_wait_has_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings("testing")
    postgresql = engine_options("postgresql+psycopg://u@db/app", settings)
    assert postgresql["pool_timeout"] == 10
    args = postgresql["connect_args"]
    assert args["connect_timeout"] == 3
    assert args["options"] == "-c statement_timeout=10000 -c datestyle=ISO"
    assert args[ANSWER_TIMEOUT] == 15
    assert (args["keepalives"], args["keepalives_idle"]) == (1, 30)
    assert args["tcp_user_timeout"] == 15000
    assert engine_options("sqlite:///app.db", settings)["connect_args"] == {
        "timeout": 5
    }

    monkeypatch.setenv("DATABASE_STATEMENT_TIMEOUT", "0")
    unbounded = engine_options(
        "postgresql+psycopg://u@db/app", load_settings("testing")
    )["connect_args"]
    assert unbounded["options"] == "-c statement_timeout=0 -c datestyle=ISO"
    assert unbounded[ANSWER_TIMEOUT] == 0  # no answer timeout either


def test_dotenv_is_read_in_development_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        f"SECRET_KEY=from-dotenv-{'y' * 40}\n"
        f"DATABASE_URL=sqlite:///{tmp_path / 'dev.db'}\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)

    testing = create_app({"APP_ENV": "testing"})
    assert not testing.config["SECRET_KEY"].startswith("from-dotenv")

    development = create_app({"APP_ENV": "development"})
    assert development.config["SECRET_KEY"].startswith("from-dotenv-")
    assert development.config["SQLALCHEMY_DATABASE_URI"].endswith("dev.db")
