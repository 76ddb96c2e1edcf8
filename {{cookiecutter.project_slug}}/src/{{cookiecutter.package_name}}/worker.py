"""Celery entry point, building exactly one Flask app::

    celery -A {{ cookiecutter.package_name }}.worker worker
    celery -A {{ cookiecutter.package_name }}.worker beat

The Celery app is exposed as ``celery``. Nothing here is named ``app``:
Celery looks for that name first and would find the Flask app.
"""

from . import create_app

flask_app = create_app()
celery = flask_app.extensions["celery"]
