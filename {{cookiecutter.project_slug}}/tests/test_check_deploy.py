"""``flask check-deploy``: every production problem of the environment, one
line each naming the variable to change; exit 1 on errors, 0 on warnings
alone; no secret ever printed.

Each test starts from a production environment that passes, breaks one
thing and expects exactly that finding.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner, Result
from flask import Flask

from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.config import EXAMPLE_SECRET_KEY, ConfigError
from {{ cookiecutter.package_name }}.deploy_check import (
    check_deploy_command,
    load_production_config,
)

ALL_CLEAR = "check-deploy: 0 errors, 0 warnings; the production settings pass."
# Variables the checks read that conftest's clean_environment (which clears
# the settings' own) leaves to a developer's shell.
PREFIXES = ("FLASK_", "GUNICORN_")

Findings = list[tuple[str, str]]


@pytest.fixture
def production_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A production environment with nothing to report; returns it."""
    for name in list(os.environ):
        if name.startswith(PREFIXES):
            monkeypatch.delenv(name)
{%- if cookiecutter.database == "postgresql" or cookiecutter.use_celery == "y" %}
    password = secrets.token_urlsafe(12)
{%- endif %}
    env = {
        "APP_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(48),
{%- if cookiecutter.database == "postgresql" %}
        "DATABASE_URL": f"postgresql://app:{password}@db.internal:5432/app",
{%- else %}
        "DATABASE_URL": "sqlite:////srv/app/data/app.db",
{%- endif %}
        "TRUSTED_HOSTS": "api.example.com",
        "SENTRY_DSN": f"https://{secrets.token_hex(16)}@o1.ingest.sentry.io/1",
{%- if cookiecutter.use_celery == "y" %}
        # The Celery broker, and where rate limits are counted.
        "REDIS_URL": f"redis://:{password}@redis.internal:6379/0",
        "EXPORT_DIR": "/srv/app/exports",
{%- else %}
        # Rate limits are counted in each process's memory: exact with one.
        "GUNICORN_WORKERS": "1",
{%- endif %}
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def check(*args: str) -> Result:
    return CliRunner().invoke(check_deploy_command, list(args))


def findings(result: Result) -> Findings:
    """(level, variable) of every finding line, in order."""
    found = []
    for line in result.output.splitlines():
        level, _, rest = line.partition(" ")
        if level in ("ERROR", "WARNING"):
            found.append((level, rest.partition(":")[0]))
    return found


def assert_only(result: Result, expected: Findings) -> None:
    """Exactly these findings, the summary last, exit 1 when one is an error."""
    assert findings(result) == expected, result.output
    assert result.output.splitlines()[-1].startswith("check-deploy: ")
    errors = any(level == "ERROR" for level, _ in expected)
    assert result.exit_code == (1 if errors else 0), result.output
    assert "Traceback" not in result.output


def assert_no_secret(output: str, env: dict[str, str]) -> None:
    """None of the environment's secrets, nor the passwords in its URLs."""
    urls = [env[name] for name in env if name.endswith("_URL")]
    passwords = [urlsplit(url).password for url in urls]
    for secret in [env["SECRET_KEY"], env["SENTRY_DSN"], *urls, *passwords]:
        if secret:
            assert secret not in output


def test_a_complete_production_environment_passes(
    production_env: dict[str, str],
) -> None:
    result = check()
    assert_only(result, [])
    assert result.output.splitlines() == [ALL_CLEAR]


def test_unset_app_env_is_production(
    production_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("APP_ENV")
    assert_only(check(), [])


def test_warnings_alone_are_printed_and_exit_zero(
    production_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SENTRY_DSN")
    result = check()
    assert_only(result, [("WARNING", "SENTRY_DSN")])
    assert "1 warning; the production settings pass" in result.output


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (None, "not set"),
        ("", "not set"),
        (EXAMPLE_SECRET_KEY, "the example value"),
        ("Zq8-" + "Lm3x" * 6, "too short (28 characters, at least 32"),
        ("ab12" * 12, "weak"),
        ("please-change-this-" + "Qz7Lm3xV" * 3, "placeholder"),
    ],
)
def test_bad_secret_key_is_an_error(
    production_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    secret: str | None,
    message: str,
) -> None:
    if secret is None:
        monkeypatch.delenv("SECRET_KEY")
    else:
        monkeypatch.setenv("SECRET_KEY", secret)
    result = check()
    assert_only(result, [("ERROR", "SECRET_KEY")])
    assert message in result.output
    assert "secrets.token_urlsafe" in result.output  # says how to make one
    if secret:
        assert secret not in result.output


def test_secret_key_override_is_named(
    production_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASK_SECRET_KEY", "Zq8-Lm3x")
    assert_only(check(), [("ERROR", "FLASK_SECRET_KEY")])


@pytest.mark.parametrize("value", ["1", "true"])
def test_debug_mode_is_an_error(
    production_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("FLASK_DEBUG", value)
    assert_only(check(), [("ERROR", "FLASK_DEBUG")])


def test_other_app_env_is_an_error(
    production_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_ENV", "development")
    result = check()
    assert_only(result, [("ERROR", "APP_ENV")])
    assert "APP_ENV=production" in result.output


def test_missing_database_url_is_an_error(
    production_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL")
    assert_only(check(), [("ERROR", "DATABASE_URL")])
{%- if cookiecutter.database == "postgresql" %}


@pytest.mark.parametrize(
    "url", ["sqlite:////srv/app/data/app.db", "sqlite:///app.db", "sqlite://"]
)
def test_sqlite_in_a_postgresql_project_is_an_error(
    production_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    result = check()
    assert_only(result, [("ERROR", "DATABASE_URL")])
    assert "generated for PostgreSQL" in result.output


def test_postgres_url_as_hosting_providers_write_it_passes(
    production_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://app@db.internal/app")
    assert_only(check(), [])
{%- else %}


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_in_memory_sqlite_is_an_error(
    production_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    result = check()
    assert_only(result, [("ERROR", "DATABASE_URL")])
    assert "in-memory" in result.output
{%- endif %}


@pytest.mark.parametrize("value", [None, ",", " "])
def test_missing_trusted_hosts_is_an_error(
    production_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    value: str | None,
) -> None:
    if value is None:
        monkeypatch.delenv("TRUSTED_HOSTS")
    else:
        monkeypatch.setenv("TRUSTED_HOSTS", value)
    assert_only(check(), [("ERROR", "TRUSTED_HOSTS")])


@pytest.mark.parametrize(("hops", "effect"), [("0", "see http"), ("2", "forge")])
def test_proxy_hops_other_than_nginx_is_an_error(
    production_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    hops: str,
    effect: str,
) -> None:
    monkeypatch.setenv("PROXY_HOPS", hops)
    result = check()
    assert_only(result, [("ERROR", "PROXY_HOPS")])
    assert effect in result.output
    assert "set PROXY_HOPS=1" in result.output


def test_proxy_hops_option_for_a_load_balancer_in_front(
    production_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    result = check("--proxy-hops", "2")
    assert_only(result, [("ERROR", "PROXY_HOPS")])
    assert "set PROXY_HOPS=2" in result.output
    monkeypatch.setenv("PROXY_HOPS", "2")
    assert_only(check("--proxy-hops", "2"), [])


def test_session_cookies_not_secure_is_an_error(
    production_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASK_SESSION_COOKIE_SECURE", "false")
    result = check()
    assert_only(result, [("ERROR", "FLASK_SESSION_COOKIE_SECURE")])
    assert "Secure" in result.output


# CORS_ORIGINS is set through its FLASK_ override, which works whether or not
# the config reads CORS_ORIGINS itself.
@pytest.mark.parametrize("origins", ["*", '["https://app.example.com", "*"]'])
def test_wildcard_cors_origin_is_an_error(
    production_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, origins: str
) -> None:
    monkeypatch.setenv("FLASK_CORS_ORIGINS", origins)
    result = check()
    assert_only(result, [("ERROR", "FLASK_CORS_ORIGINS")])
    assert "every origin" in result.output


def test_listed_cors_origins_pass(
    production_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASK_CORS_ORIGINS", "https://app.example.com")
    assert_only(check(), [])


def test_a_plain_http_cors_origin_is_a_warning(
    production_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "FLASK_CORS_ORIGINS", '["https://app.example.com", "http://app.example.com"]'
    )
    result = check()
    assert_only(result, [("WARNING", "FLASK_CORS_ORIGINS")])
    assert "https://" in result.output
{%- if cookiecutter.use_celery == "y" %}


def test_missing_broker_is_an_error(
    production_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL")
    result = check()
    # Without REDIS_URL, rate limits may be counted in memory too.
    found = [item for item in findings(result) if item[1] != "RATELIMIT_STORAGE_URI"]
    assert found == [("ERROR", "REDIS_URL")], result.output
    assert result.exit_code == 1


def test_local_files_broker_is_an_error(
    production_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", "filesystem://")
    assert_only(check(), [("ERROR", "CELERY_BROKER_URL")])


@pytest.mark.parametrize(
    ("name", "value"), [("EXPORT_DIR", "/var/lib/exports"), ("EXPORT_X_ACCEL", "0")]
)
def test_exports_nginx_cannot_serve_are_a_warning(
    production_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    value: str,
) -> None:
    monkeypatch.setenv(name, value)
    assert_only(check(), [("WARNING", name)])
{%- endif %}


def test_rate_limits_in_memory_with_several_workers_are_a_warning(
    production_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GUNICORN_WORKERS", raising=False)
    monkeypatch.setenv("FLASK_RATELIMIT_STORAGE_URI", "memory://")
    result = check()
    assert_only(result, [("WARNING", "FLASK_RATELIMIT_STORAGE_URI")])
    assert "at least 3 by default" in result.output
    monkeypatch.setenv("GUNICORN_WORKERS", "4")
    assert "GUNICORN_WORKERS=4" in check().output
    monkeypatch.setenv("GUNICORN_WORKERS", "1")
    assert_only(check(), [])


def test_rate_limits_in_shared_storage_pass(
    production_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASK_RATELIMIT_STORAGE_URI", "memcached://cache.internal")
    assert_only(check(), [])


@pytest.mark.parametrize(
    ("name", "value"), [("FLASK_LOG_JSON", "false"), ("LOG_LEVEL", "DEBUG")]
)
def test_log_settings_are_a_warning(
    production_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    value: str,
) -> None:
    monkeypatch.setenv(name, value)
    assert_only(check(), [("WARNING", name)])


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_CONTENT_LENGTH", "abc"),
        ("SENTRY_TRACES_SAMPLE_RATE", "2"),
        ("METRICS_ENABLED", "maybe"),
        ("DATABASE_POOL_SIZE", "many"),
    ],
)
def test_a_variable_config_cannot_read_is_an_error(
    production_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    value: str,
) -> None:
    monkeypatch.setenv(name, value)
    assert_only(check(), [("ERROR", name)])


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("GUNICORN_WORKERS", "many", "valid integer"),
        ("GUNICORN_WORKER_CLASS", "eventlet", "gthread"),
        ("GUNICORN_WORKER", "4", "unknown variable"),
        ("GUNICORN_GEVENT_PATCHED_DB", "1", "no longer read"),
    ],
)
def test_what_stops_gunicorn_from_starting_is_an_error(
    production_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    value: str,
    message: str,
) -> None:
    # With rate limits in memory, the only finding still: the worker count
    # is unknown while gunicorn would not start.
    monkeypatch.setenv("FLASK_RATELIMIT_STORAGE_URI", "memory://")
    monkeypatch.setenv(name, value)
    result = check()
    assert_only(result, [("ERROR", name)])
    assert message in result.output
    assert "gunicorn refuses to start" in result.output


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        # A setting's override is checked as its variable is.
        ("FLASK_MAX_CONTENT_LENGTH", "abc", "must be an integer"),
        ("FLASK_METRICS_ENABLED", "maybe", "true or false"),
        # Any other key keeps what JSON made of it.
        ("FLASK_SQLALCHEMY_RECORD_QUERIES", "yes", "true or false"),
    ],
)
def test_flask_override_of_the_wrong_type_is_an_error(
    production_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv(name, value)
    result = check()
    assert_only(result, [("ERROR", name)])
    assert message in result.output


def test_every_problem_is_listed_at_once(
    production_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_CONTENT_LENGTH", "abc")
    monkeypatch.setenv("SENTRY_TRACES_SAMPLE_RATE", "2")
    monkeypatch.delenv("SECRET_KEY")
    monkeypatch.delenv("TRUSTED_HOSTS")
    monkeypatch.delenv("SENTRY_DSN")
    monkeypatch.setenv("FLASK_DEBUG", "1")
    result = check()
    assert_only(
        result,
        [
            ("ERROR", "MAX_CONTENT_LENGTH"),
            ("ERROR", "SENTRY_TRACES_SAMPLE_RATE"),
            ("ERROR", "SECRET_KEY"),
            ("ERROR", "FLASK_DEBUG"),
            ("ERROR", "TRUSTED_HOSTS"),
            ("WARNING", "SENTRY_DSN"),
        ],
    )
    assert result.output.splitlines()[-1] == (
        "check-deploy: 5 errors, 1 warning; fix the errors before deploying."
    )


def test_no_secret_is_ever_printed(
    production_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not in the findings about the secrets, nor when one is pasted into a
    variable whose message would quote it."""
    weak = "Zq8-Lm3x-" + secrets.token_hex(4)
    monkeypatch.setenv("FLASK_SECRET_KEY", weak)  # overrides SECRET_KEY
    monkeypatch.setenv("SENTRY_TRACES_SAMPLE_RATE", production_env["SECRET_KEY"])
    monkeypatch.setenv("DATABASE_POOL_SIZE", production_env["SENTRY_DSN"])
    monkeypatch.setenv("PROXY_HOPS", "0")
    monkeypatch.delenv("TRUSTED_HOSTS")
    result = check()
    assert_only(
        result,
        [
            ("ERROR", "SENTRY_TRACES_SAMPLE_RATE"),
            ("ERROR", "DATABASE_POOL_SIZE"),
            ("ERROR", "FLASK_SECRET_KEY"),
            ("ERROR", "TRUSTED_HOSTS"),
            ("ERROR", "PROXY_HOPS"),
        ],
    )
    assert_no_secret(result.output, production_env)
    assert weak not in result.output


@pytest.mark.parametrize(
    "breakage",
    [
        {"SECRET_KEY": None},
        {"SECRET_KEY": EXAMPLE_SECRET_KEY},
        {"SECRET_KEY": "Zq8-Lm3x"},
        {"DATABASE_URL": None},
{%- if cookiecutter.use_celery == "y" %}
        {"REDIS_URL": None},
{%- endif %}
    ],
    ids=lambda breakage: "-".join(f"{k}={v}" for k, v in breakage.items()),
)
def test_what_stops_production_from_starting_is_an_error(
    production_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    breakage: dict[str, str | None],
) -> None:
    """Whatever ProductionConfig.validate refuses, check-deploy reports."""
    ((name, value),) = breakage.items()
    if value is None:
        monkeypatch.delenv(name)
    else:
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        create_app()
    result = check()
    assert result.exit_code == 1
    assert ("ERROR", name) in findings(result)


def test_checks_see_the_config_the_app_gets(
    production_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """load_production_config builds what create_app builds (without
    validating it), FLASK_ overrides included."""
    monkeypatch.delenv("SENTRY_DSN")  # no Sentry client in this test
    monkeypatch.setenv("FLASK_SESSION_COOKIE_SAMESITE", "Strict")
    monkeypatch.setenv("PROXY_HOPS", "1")
    checked, _ = load_production_config()
    app_config = create_app().config
    for key in (
        "SECRET_KEY",
        "DEBUG",
        "SQLALCHEMY_DATABASE_URI",
        "SQLALCHEMY_ENGINE_OPTIONS",
        "TRUSTED_HOSTS",
        "PROXY_HOPS",
        "SESSION_COOKIE_SECURE",
        "SESSION_COOKIE_SAMESITE",
        "LOG_JSON",
        "LOG_LEVEL",
        "SENTRY_DSN",
{%- if cookiecutter.use_celery == "y" %}
        "CELERY_BROKER_URL",
        "EXPORT_X_ACCEL",
{%- endif %}
    ):
        assert checked[key] == app_config[key], key
    assert checked["SESSION_COOKIE_SAMESITE"] == "Strict"


def test_the_app_has_the_command(
    production_env: dict[str, str], make_app: Callable[..., Flask]
) -> None:
    app = make_app(schema=False)
    assert app.cli.commands["check-deploy"] is check_deploy_command
    result = app.test_cli_runner().invoke(args=["check-deploy"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [ALL_CLEAR]


def test_flask_command_runs_when_the_app_cannot_be_built(
    production_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """``flask --app <package>.wsgi check-deploy`` finds the command without
    importing wsgi, which refuses this environment."""
    monkeypatch.delenv("SECRET_KEY")
    with pytest.raises(ConfigError):
        create_app()
    env = {**os.environ, "FLASK_SKIP_DOTENV": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "flask",
            "--app",
            "{{ cookiecutter.package_name }}.wsgi",
            "check-deploy",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines()[0].startswith("ERROR SECRET_KEY: not set")
    assert "Traceback" not in result.stdout + result.stderr
    assert_no_secret(result.stdout + result.stderr, production_env)
