"""``flask check-deploy``: Django's ``check --deploy``, for this service.

It builds the production configuration from the current environment, as
``create_app`` does under ``APP_ENV=production``, but instead of stopping at
the first problem it lists every one, each with the variable to change::

    ERROR TRUSTED_HOSTS: not set; ...
    WARNING SENTRY_DSN: not set; ...
    check-deploy: 1 error, 1 warning; fix the errors before deploying.

It exits 1 when there is an error, 0 otherwise (warnings are printed). A
finding says what is wrong, not what a variable holds. Only the messages of
config loading quote a value (``MAX_CONTENT_LENGTH must be an integer, got
'abc'``), and in them the values of secret-looking variables are masked.

Each check is a small function of a :class:`Context` returning findings;
:data:`CHECKS` lists them. The command is registered on the app
(``cli.init_app``) and, in ``pyproject.toml``, as a ``flask.commands``
plugin, so ``flask --app <package>.wsgi check-deploy`` runs without
importing ``wsgi``: building the app fails on exactly the configurations
this command has to report.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import click

from . import config
from .serving import GunicornConfigError, GunicornSettings

# The production database this project was generated for.
DATABASE = "{{ cookiecutter.database }}"
# deploy/nginx/nginx.conf is one proxy hop in front of the app.
SHIPPED_PROXY_HOPS = 1
{%- if cookiecutter.use_celery == "y" %}
# Where deploy/nginx/nginx.conf serves X-Accel-Redirect downloads from.
NGINX_EXPORT_DIR = "/srv/app/exports"
{%- endif %}
# A key of fewer different characters is a pattern, not a random string.
MIN_SECRET_KEY_CHARACTERS = 8
PLACEHOLDER_WORDS = ("change", "example", "secret", "password", "default")
NEW_KEY_COMMAND = 'python -c "import secrets; print(secrets.token_urlsafe(48))"'
# Variables Flask's command line reads itself: not config overrides.
FLASK_CLI_VARIABLES = frozenset(
    {"FLASK_APP", "FLASK_DEBUG", "FLASK_ENV_FILE", "FLASK_SKIP_DOTENV"}
)
# A ConfigError message starts with the variable it is about.
VARIABLE_NAME = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")
# Variables whose values are masked in the messages of config loading.
SECRET_VARIABLE = re.compile(r"SECRET|PASSWORD|TOKEN|DSN|_KEY$|_URL$|_URI$")

Level = Literal["ERROR", "WARNING"]


@dataclass(frozen=True)
class Finding:
    level: Level
    variable: str
    message: str

    def line(self) -> str:
        return f"{self.level} {self.variable}: {self.message}"


def error(variable: str, message: str) -> Finding:
    return Finding("ERROR", variable, message)


def warning(variable: str, message: str) -> Finding:
    return Finding("WARNING", variable, message)


@dataclass(frozen=True)
class Context:
    """What the checks read: the production config as the app would get it,
    the same config before the ``FLASK_`` overrides, and the environment."""

    config: Mapping[str, Any]
    defaults: Mapping[str, Any]
    environ: Mapping[str, str]
    proxy_hops: int = SHIPPED_PROXY_HOPS

    def variable(self, key: str, name: str | None = None) -> str:
        """The variable that sets config ``key``: its ``FLASK_`` override
        when that is set, else ``name`` (default: the key itself)."""
        override = f"FLASK_{key}"
        return override if override in self.environ else (name or key)


Check = Callable[[Context], list[Finding]]


# Building the configuration. ------------------------------------------------


def load_production_config() -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, config before the ``FLASK_`` overrides), built as
    ``create_app`` builds it for production, but not refused. Raises
    :class:`config.ConfigError` naming the first variable it cannot read."""
    checked = config.build_config("production", strict=False)
    return checked, config.load_settings("production").flask_config()


def production_context(
    proxy_hops: int = SHIPPED_PROXY_HOPS,
) -> tuple[Context | None, list[Finding]]:
    """The checks' context, and a finding for each variable that stops the
    configuration from loading at all. Such a variable is left out (its
    default used) to find the next one, then put back."""
    environ = dict(os.environ)
    hidden = secret_values(environ)
    findings: list[Finding] = []
    left_out: dict[str, str] = {}
    try:
        while True:
            try:
                loaded, defaults = load_production_config()
            except config.ConfigError as exc:
                message = str(exc)
                names = VARIABLE_NAME.findall(message)
                # The variable set: the one named, or its FLASK_ override.
                removable = [
                    candidate
                    for name in names
                    for candidate in (name, f"FLASK_{name}")
                    if candidate in os.environ
                ]
                named = names[0] if names else "CONFIG"
                variable = removable[0] if removable else named
                message = mask(_without_name(message, named), hidden)
                if not removable:
                    findings.append(error(variable, f"{message}; nothing else checked"))
                    return None, findings
                findings.append(error(variable, message))
                for name in removable:
                    left_out[name] = os.environ.pop(name)
                continue
            return Context(loaded, defaults, environ, proxy_hops), findings
    finally:
        os.environ.update(left_out)


def secret_values(environ: Mapping[str, str]) -> list[str]:
    """Values never to print: those of secret-looking variables, and the
    passwords inside URLs. Longest first, so none is half masked."""
    values = set()
    for name, value in environ.items():
        value = value.strip()
        if not SECRET_VARIABLE.search(name) or not value:
            continue
        values.add(value)
        try:
            password = urlsplit(value).password
        except ValueError:
            password = None
        if password:
            values.add(password)
    return sorted((value for value in values if len(value) >= 4), key=len, reverse=True)


def mask(line: str, secrets: list[str]) -> str:
    for secret in secrets:
        line = line.replace(secret, "***")
    return line


def _without_name(message: str, variable: str) -> str:
    return message.removeprefix(variable).lstrip(" :").strip() or message


# The checks. ------------------------------------------------------------------


def check_app_env(ctx: Context) -> list[Finding]:
    value = ctx.environ.get("APP_ENV", "").strip()
    if value and value != "production":
        return [
            error(
                "APP_ENV",
                "is not production: the app would not run with the production "
                "config checked here; set APP_ENV=production (or unset it: "
                "unset means production)",
            )
        ]
    return []


def check_secret_key(ctx: Context) -> list[Finding]:
    variable = ctx.variable("SECRET_KEY")
    key = ctx.config.get("SECRET_KEY")
    generate = f"generate one: {NEW_KEY_COMMAND}"
    if not key:
        return [error(variable, f"not set; production needs one, {generate}")]
    if not isinstance(key, str):
        return [error(variable, f"must be a string; {generate}")]
    if key == config.EXAMPLE_SECRET_KEY:
        return [error(variable, f"is the example value from .env.example; {generate}")]
    if len(key) < config.MIN_SECRET_KEY_LENGTH:
        return [
            error(
                variable,
                f"is too short ({len(key)} characters, at least "
                f"{config.MIN_SECRET_KEY_LENGTH} needed); {generate}",
            )
        ]
    if len(set(key)) < MIN_SECRET_KEY_CHARACTERS:
        return [
            error(
                variable,
                f"is weak: fewer than {MIN_SECRET_KEY_CHARACTERS} different "
                f"characters, a pattern rather than a random string; {generate}",
            )
        ]
    if any(word in key.lower() for word in PLACEHOLDER_WORDS):
        words = ", ".join(PLACEHOLDER_WORDS)
        return [
            error(
                variable,
                f"looks like a placeholder (it contains one of: {words}); {generate}",
            )
        ]
    return []


def check_debug(ctx: Context) -> list[Finding]:
    findings = []
    if ctx.config.get("DEBUG"):
        findings.append(
            error(
                "FLASK_DEBUG",
                "debug mode is on: errors would show tracebacks, and `flask "
                "run` would serve the interactive debugger; unset FLASK_DEBUG",
            )
        )
    if ctx.config.get("TESTING"):
        findings.append(
            error(
                ctx.variable("TESTING", "FLASK_TESTING"),
                "testing mode is on: errors propagate instead of being "
                "handled; unset it",
            )
        )
    return findings


def check_database(ctx: Context) -> list[Finding]:
    variable = ctx.variable("SQLALCHEMY_DATABASE_URI", "DATABASE_URL")
    uri = ctx.config.get("SQLALCHEMY_DATABASE_URI")
    if not uri:
        return [error(variable, "not set; production needs a database URL")]
    if not isinstance(uri, str):
        return [error(variable, "must be a database URL")]
    if not uri.startswith("sqlite"):
        return []
    if DATABASE == "postgresql":
        return [
            error(
                variable,
                "is a SQLite database, but this project was generated for "
                "PostgreSQL (several processes write, migrations target it); "
                "use postgresql://user:password@host:5432/name",
            )
        ]
    if uri in ("sqlite://", "sqlite:///") or ":memory:" in uri:
        return [
            error(
                variable,
                "is an in-memory SQLite database: each process gets its own, "
                "empty after every restart; use a file, "
                "sqlite:////srv/app/data/app.db",
            )
        ]
    return []


def check_trusted_hosts(ctx: Context) -> list[Finding]:
    if ctx.config.get("TRUSTED_HOSTS"):
        return []
    return [
        error(
            ctx.variable("TRUSTED_HOSTS"),
            "not set: the app answers requests for any Host header and builds "
            "URLs from it; list the host names clients use, comma-separated "
            "(TRUSTED_HOSTS=api.example.com)",
        )
    ]


def check_proxy_hops(ctx: Context) -> list[Finding]:
    variable = ctx.variable("PROXY_HOPS")
    hops = ctx.config.get("PROXY_HOPS")
    if not isinstance(hops, int) or isinstance(hops, bool):
        return []  # a FLASK_ override of the wrong type: check_flask_overrides
    expected = ctx.proxy_hops
    if hops == expected:
        return []
    if expected == SHIPPED_PROXY_HOPS:
        proxies = "the shipped nginx (deploy/nginx/nginx.conf) is one proxy hop"
    else:
        proxies = f"--proxy-hops says {expected} proxies set X-Forwarded-*"
    if hops < expected:
        effect = (
            "the app would take the proxy's address for the client's and "
            "see http instead of https"
        )
    else:
        effect = (
            "clients could forge X-Forwarded-For, -Proto and -Host, which "
            "no proxy overwrites"
        )
    message = f"is {hops}, but {proxies}: {effect}; set {variable}={expected}"
    return [error(variable, message)]


def check_session_cookies(ctx: Context) -> list[Finding]:
    findings = []
    if ctx.config.get("SESSION_COOKIE_SECURE") is not True:
        findings.append(
            error(
                ctx.variable("SESSION_COOKIE_SECURE", "FLASK_SESSION_COOKIE_SECURE"),
                "session cookies are not marked Secure, so browsers would send "
                "them over plain http; unset it (production sets true)",
            )
        )
    if ctx.config.get("SESSION_COOKIE_HTTPONLY") is not True:
        findings.append(
            warning(
                ctx.variable(
                    "SESSION_COOKIE_HTTPONLY", "FLASK_SESSION_COOKIE_HTTPONLY"
                ),
                "session cookies are readable by scripts in the page; unset it "
                "(production sets true)",
            )
        )
    return findings


def _items(value: Any) -> list[str]:
    """A list setting that may still be a comma-separated string."""
    if isinstance(value, str):
        return [item for item in re.split(r"[,\s]+", value) if item]
    if isinstance(value, Iterable):
        return [str(item).strip() for item in value]
    return [str(value)]


def check_cors(ctx: Context) -> list[Finding]:
    origins = ctx.config.get("CORS_ORIGINS")
    if origins is None:
        return []
    variable = ctx.variable("CORS_ORIGINS")
    items = _items(origins)
    if any(item in ("*", ".*") for item in items):
        credentials = (
            ", with their cookies and credentials"
            if ctx.config.get("CORS_ALLOW_CREDENTIALS")
            else ""
        )
        return [
            error(
                variable,
                "allows every origin (*): any web site could call the API from "
                f"its visitors' browsers{credentials}; list the origins "
                "instead (CORS_ORIGINS=https://app.example.com)",
            )
        ]
    if any(item.startswith("http://") for item in items):
        return [
            warning(
                variable,
                "allows an http:// origin: a page served without TLS can be "
                "altered on the way and then call the API; use https:// origins",
            )
        ]
    return []
{%- if cookiecutter.use_celery == "y" %}


def check_broker(ctx: Context) -> list[Finding]:
    broker = ctx.config.get("CELERY_BROKER_URL")
    if not broker:
        return [
            error(
                "REDIS_URL",
                "not set; production needs a Redis broker for Celery "
                "(REDIS_URL=redis://host:6379/0)",
            )
        ]
    scheme = urlsplit(str(broker)).scheme
    if scheme in ("filesystem", "memory"):
        override = "CELERY_BROKER_URL"
        return [
            error(
                override if override in ctx.environ else "REDIS_URL",
                f"is a {scheme}:// broker, for one machine and development "
                "only; use Redis (redis://host:6379/0)",
            )
        ]
    return []


def check_exports(ctx: Context) -> list[Finding]:
    if not ctx.config.get("EXPORT_X_ACCEL"):
        return [
            warning(
                ctx.variable("EXPORT_X_ACCEL"),
                "is off: export downloads are sent by app workers, each held "
                "for as long as a slow client takes; turn it on behind the "
                "shipped nginx",
            )
        ]
    directory = str(ctx.config.get("EXPORT_DIR") or "")
    if directory.rstrip("/") != NGINX_EXPORT_DIR:
        return [
            warning(
                ctx.variable("EXPORT_DIR"),
                f"is not {NGINX_EXPORT_DIR}, where deploy/nginx/nginx.conf "
                "serves export downloads from (location /_exports/), so "
                f"downloads would answer 404; set EXPORT_DIR={NGINX_EXPORT_DIR} "
                "or change both together",
            )
        ]
    return []
{%- endif %}


def check_sentry(ctx: Context) -> list[Finding]:
    if ctx.config.get("SENTRY_DSN"):
        return []
    return [
        warning(
            ctx.variable("SENTRY_DSN"),
            "not set: unhandled errors are only logged, not reported to Sentry",
        )
    ]


def check_logging(ctx: Context) -> list[Finding]:
    findings = []
    if ctx.config.get("LOG_JSON") is not True:
        findings.append(
            warning(
                ctx.variable("LOG_JSON", "FLASK_LOG_JSON"),
                "JSON logs are off: log collectors get plain lines without "
                "fields; unset it (production sets true)",
            )
        )
    if str(ctx.config.get("LOG_LEVEL", "")).upper() == "DEBUG":
        findings.append(
            warning(
                ctx.variable("LOG_LEVEL"),
                "is DEBUG: a flood of log lines, which may carry request "
                "details; use INFO",
            )
        )
    return findings


def check_gunicorn(ctx: Context) -> list[Finding]:
    """What stops deploy/gunicorn.conf.py from starting: a ``GUNICORN_``
    variable it cannot read, a misspelt or retired one."""
    try:
        GunicornSettings.load()
    except GunicornConfigError as exc:
        message = mask(str(exc), secret_values(ctx.environ))
        names = VARIABLE_NAME.findall(message)
        variable = names[0] if names else "GUNICORN"
        reason = _without_name(message, variable)
        return [error(variable, f"{reason}; gunicorn refuses to start")]
    return []


def gunicorn_workers() -> int | None:
    """How many workers deploy/gunicorn.conf.py starts, at least:
    ``GUNICORN_WORKERS``, else its default, 2 x CPUs + 1 (so 3 or more)
    capped at ``GUNICORN_MAX_WORKERS`` (8). None when it would not start
    (``check_gunicorn`` says why)."""
    try:
        settings = GunicornSettings.load()
    except GunicornConfigError:
        return None
    return settings.workers or min(3, settings.max_workers)


def check_rate_limits(ctx: Context) -> list[Finding]:
    if not any(key.startswith("RATELIMIT_") for key in ctx.config):
        return []  # no rate limiter configured
    if ctx.config.get("RATELIMIT_ENABLED") is False:
        return [
            warning(
                ctx.variable("RATELIMIT_ENABLED"),
                "rate limiting is off; only nginx's per-address limits apply",
            )
        ]
    storage = str(ctx.config.get("RATELIMIT_STORAGE_URI") or "memory://")
    workers = gunicorn_workers()
    if storage.startswith("memory://") and workers is not None and workers > 1:
        if ctx.environ.get("GUNICORN_WORKERS", "").strip():
            count = f"GUNICORN_WORKERS={workers}"
        else:
            count = f"at least {workers} by default"
        return [
            warning(
                ctx.variable("RATELIMIT_STORAGE_URI"),
                "limits are counted in memory, by each gunicorn worker on its "
                f"own ({count}), so a client gets several times its limit; "
{%- if cookiecutter.use_celery == "y" %}
                "keep them in Redis (REDIS_URL)",
{%- else %}
                "keep them in a store the workers share",
{%- endif %}
            )
        ]
    return []


def check_flask_overrides(ctx: Context) -> list[Finding]:
    """``FLASK_`` values are read as JSON: ``FLASK_X=abc`` for a number or
    ``FLASK_X=yes`` for a flag leaves a string, which the app misreads."""
    findings = []
    for name in sorted(ctx.environ):
        key = name.removeprefix("FLASK_")
        if key == name or name in FLASK_CLI_VARIABLES or key.startswith("RUN_"):
            continue
        before, after = ctx.defaults.get(key), ctx.config.get(key)
        if isinstance(before, bool) and not isinstance(after, bool):
            findings.append(error(name, "must be true or false (read as JSON)"))
        elif (
            isinstance(before, int)
            and not isinstance(before, bool)
            and (isinstance(after, bool) or not isinstance(after, int))
        ):
            findings.append(error(name, "must be a whole number (read as JSON)"))
    return findings


CHECKS: tuple[Check, ...] = (
    check_app_env,
    check_secret_key,
    check_debug,
    check_database,
    check_trusted_hosts,
    check_proxy_hops,
    check_session_cookies,
    check_cors,
{%- if cookiecutter.use_celery == "y" %}
    check_broker,
    check_exports,
{%- endif %}
    check_flask_overrides,
    check_sentry,
    check_logging,
    check_gunicorn,
    check_rate_limits,
)


def run_checks(proxy_hops: int = SHIPPED_PROXY_HOPS) -> list[Finding]:
    """Every finding about this environment, errors first."""
    ctx, findings = production_context(proxy_hops)
    if ctx is not None:
        for check in CHECKS:
            findings.extend(check(ctx))
    return sorted(findings, key=lambda finding: finding.level != "ERROR")


# Output. ----------------------------------------------------------------------


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def summary(findings: list[Finding]) -> str:
    errors = sum(finding.level == "ERROR" for finding in findings)
    counts = f"{_count(errors, 'error')}, {_count(len(findings) - errors, 'warning')}"
    if errors:
        verdict = "fix the errors before deploying"
    elif findings:
        verdict = "the production settings pass; review the warnings"
    else:
        verdict = "the production settings pass"
    return f"check-deploy: {counts}; {verdict}."


@click.command("check-deploy")
@click.option(
    "--proxy-hops",
    type=click.IntRange(min=0),
    default=SHIPPED_PROXY_HOPS,
    show_default=True,
    help="Proxies in front of the app that set X-Forwarded-*: the shipped "
    "nginx alone is 1; a load balancer in front of it that sets them too, 2.",
)
def check_deploy_command(proxy_hops: int) -> None:
    """Check the production settings this environment gives the app.

    Lists every problem, ERROR or WARNING, with the variable to change, and
    exits 1 when there is an error. No secret is printed.
    """
    findings = run_checks(proxy_hops)
    for finding in findings:
        click.echo(finding.line())
    click.echo(summary(findings))
    if any(finding.level == "ERROR" for finding in findings):
        raise click.exceptions.Exit(1)
