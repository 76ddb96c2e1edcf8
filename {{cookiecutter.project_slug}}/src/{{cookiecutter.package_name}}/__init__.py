"""{{ cookiecutter.project_name }}: {{ cookiecutter.description }}

:func:`create_app` is the only place an app is built. Every extension is
bound here, so each call gives an app with its own config, engine and pool,
and nothing is shared between two apps in one process.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dotenv import load_dotenv
from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from . import (
    accounts,
    apidocs,
    cli,
    config,
    database,
    http,
    logs,
    metrics,
    openapi,
)
{%- if cookiecutter.use_celery == "y" %}
from .celery_app import init_celery
{%- endif %}
from .events import bp as events_bp
{%- if cookiecutter.use_celery == "y" %}
from .exports import bp as exports_bp
{%- endif %}
from .extensions import db, migrate
from .health import bp as health_bp
from .http import g_guard
{%- if cookiecutter.use_celery == "y" %}
from .jobs import bp as jobs_bp
{%- endif %}
from .sentry import init_sentry

log = logging.getLogger(__name__)


def load_dotenv_for_development() -> None:
    """Read ``.env`` into the environment, in development only: the image
    carries none (.dockerignore), and production never reads a stray one."""
    load_dotenv(".env", override=False)


def instance_path() -> str:
    """Local data (the SQLite file) lives in ``./instance`` of the working
    directory, or wherever ``INSTANCE_PATH`` points."""
    return str(Path(config.ProcessSettings().INSTANCE_PATH).resolve())


def create_app(config_overrides: Mapping[str, Any] | None = None) -> Flask:
    """Build the app.

    The settings class comes from ``APP_ENV`` (or ``APP_ENV`` in
    ``config_overrides``); ``FLASK_*`` environment variables, then
    ``config_overrides`` (tests use it), override its values (config.py).
    An unusable config stops the app, naming the variable.
    """
    overrides = dict(config_overrides or {})
    env_name = overrides.pop("APP_ENV", None) or config.app_env()
    if env_name == "development":
        load_dotenv_for_development()

    app = Flask(__name__, instance_path=instance_path())
    app.json = http.JSONProvider(app)
    app.config.update(config.build_config(env_name, overrides))

    logs.configure_logging(app.config["LOG_LEVEL"], json=app.config["LOG_JSON"])
    init_sentry(app.config)
    trust_proxies(app, app.config["PROXY_HOPS"])
    # First: its teardown then runs after every other one (Flask runs them
    # in reverse), so a failing check skips no other one.
    g_guard.init_app(app)
    db.init_app(app)
    database.init_app(app)
    migrate.init_app(app, db)
    http.init_app(app)
    metrics.init_app(app)
    accounts.init_app(app)
    cli.init_app(app)
{%- if cookiecutter.use_celery == "y" %}
    init_celery(app)
    app.config["EXPORT_DIR"] = app.config["EXPORT_DIR"] or str(
        Path(app.instance_path) / "exports"
    )
{%- endif %}
    register_blueprints(app)
    log.debug("app created with %s config", env_name)
    return app


def trust_proxies(app: Flask, hops: int) -> None:
    """Take client address, scheme and host from X-Forwarded-* headers set by
    ``hops`` proxies. With 0 they are ignored: a client could forge them."""
    if hops > 0:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops
        )


def register_blueprints(app: Flask) -> None:
    app.register_blueprint(health_bp)
    app.register_blueprint(openapi.bp)
    apidocs.init_app(app)
    app.register_blueprint(events_bp)
{%- if cookiecutter.use_celery == "y" %}
    app.register_blueprint(jobs_bp)
    app.register_blueprint(exports_bp)
{%- endif %}
