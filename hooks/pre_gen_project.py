"""Validate the answers before any file is written.

Each check is a small function that returns an error message, or ``None`` when
the value is fine, so the tests can call them one by one. On the first failure
the hook prints one line naming the field, the value and the rule, and exits
non-zero; cookiecutter then removes the half-made project directory.
"""

from __future__ import annotations

import json
import keyword
import re
import sys

SLUG_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
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
            "single hyphens, starting with a letter (e.g. 'billing-service')"
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


def validate(answers: dict[str, str]) -> list[str]:
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


def main() -> int:
    answers = json.loads(r"""{{ cookiecutter | jsonify }}""")
    problems = validate(answers)
    if problems:
        print(f"ERROR: {problems[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
