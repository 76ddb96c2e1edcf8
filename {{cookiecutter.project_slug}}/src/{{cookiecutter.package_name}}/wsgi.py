"""WSGI entry point: ``gunicorn {{ cookiecutter.package_name }}.wsgi:app``."""

import click

from . import create_app
from .tracing import init_tracing

app = create_app()

# Gunicorn starts tracing in each worker after the fork (its config's
# post_worker_init); Flask's dev server serves from this very process.
_command = click.get_current_context(silent=True)
if _command is not None and _command.info_name == "run":
    init_tracing(app, "web")
