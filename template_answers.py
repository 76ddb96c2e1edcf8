"""Validate the answers before anything is written.

Loaded by cookiecutter (and cruft) as a local Jinja extension, listed in
``_extensions`` of ``cookiecutter.json``: its ``check_answers`` filter renders
the private ``__answers_checked`` variable, the last one, so it sees every
answer. A bad answer raises ``FailedHookException``, one of the errors the
cookiecutter CLI prints as its bare message: the user reads one line naming
the field, the value and the rule, with no traceback, and no directory has
been made yet. A failing ``pre_gen_project`` hook cannot do that: cookiecutter
logs every hook failure with a traceback.

Each check is a small function that returns an error message, or ``None``
when the value is fine, so the tests can call them one by one.
"""

from __future__ import annotations

import keyword
import re
import sys
from collections.abc import Mapping

from cookiecutter.exceptions import FailedHookException
from jinja2 import Environment
from jinja2.ext import Extension

SLUG_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
PACKAGE_RE = re.compile(r"^[a-z][a-z0-9_]*$")
EMAIL_RE = re.compile(r'^[^@\s"\\]+@[^@\s"\\]+\.[^@\s"\\]+$')

# Import names the generated project depends on, or that its tooling owns.
# A package with one of these names would shadow the real one.
RESERVED_PACKAGE_NAMES = frozenset(
    {
        "alembic",
        "app",
        "celery",
        "click",
        "conftest",
        "flask",
        "flask_migrate",
        "flask_sqlalchemy",
        "gunicorn",
        "itsdangerous",
        "jinja2",
        "kombu",
        "migrations",
        "psycopg",
        "pydantic",
        "pytest",
        "redis",
        "sentry_sdk",
        "sqlalchemy",
        "src",
        "test",
        "tests",
        "werkzeug",
    }
)


def check_project_slug(slug: str) -> str | None:
    if not SLUG_RE.match(slug):
        return (
            f"project_slug {slug!r} is invalid: use lowercase letters, digits and "
            "single hyphens (e.g. 'billing-service')"
        )
    return None


def check_package_name(name: str) -> str | None:
    if not name.isidentifier() or not PACKAGE_RE.match(name):
        return (
            f"package_name {name!r} is invalid: it must be a lowercase Python "
            "identifier (letters, digits, underscores; starting with a letter)"
        )
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        return f"package_name {name!r} is invalid: it is a Python keyword"
    if name in sys.stdlib_module_names:
        return (
            f"package_name {name!r} is invalid: it shadows the standard library "
            f"module {name!r}"
        )
    if name in RESERVED_PACKAGE_NAMES:
        return (
            f"package_name {name!r} is invalid: it shadows the dependency or "
            f"tool {name!r}"
        )
    return None


def check_email(email: str) -> str | None:
    if not EMAIL_RE.match(email):
        return f"email {email!r} is invalid: expected the form name@domain.tld"
    return None


def check_required(field: str, value: str) -> str | None:
    if not value.strip():
        return f"{field} {value!r} is invalid: it must not be empty"
    if "\n" in value or '"' in value or "\\" in value:
        return (
            f"{field} {value!r} is invalid: it must be one line without "
            "double quotes or backslashes"
        )
    return None


def validate(answers: Mapping[str, str]) -> list[str]:
    """Return every problem with the answers, in prompt order."""
    problems = [
        check_required(field, answers[field])
        for field in ("project_name", "description", "author_name")
    ]
    problems += [
        check_project_slug(answers["project_slug"]),
        check_package_name(answers["package_name"]),
        check_email(answers["email"]),
    ]
    return [problem for problem in problems if problem]


def check_answers(answers: Mapping[str, str]) -> str:
    """Render as nothing when the answers are fine; stop generation with the
    first problem otherwise."""
    problems = validate(answers)
    if problems:
        raise FailedHookException(f"ERROR: {problems[0]}")
    return ""


class AnswersExtension(Extension):
    """Adds the ``check_answers`` filter to cookiecutter's Jinja environment."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.filters["check_answers"] = check_answers
