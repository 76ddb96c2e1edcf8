"""The pre/post generation hooks: each function on its own, then whole bakes."""

from __future__ import annotations

import re
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from template_tools.process import run
from template_tools.template import (
    TEMPLATE_DIR,
    bake_cli,
    choice_options,
    defaults,
    load_by_path,
)

SECRET_KEY_RE = re.compile(r"[A-Za-z0-9_-]{43,}")


pre = load_by_path("template_answers.py")
post = load_by_path("hooks/post_gen_project.py")

VALID_ANSWERS = {
    "project_name": "Flask Service",
    "project_slug": "flask-service",
    "package_name": "flask_service",
    "description": "A production-ready Flask service.",
    "author_name": "Your Name",
    "email": "you@example.com",
    **defaults(),
}


# --- the answer checks, one at a time ----------------------------------------


@pytest.mark.parametrize(
    "slug", ["flask-service", "billing", "a", "api2", "my-api-v2", "2fa-service"]
)
def test_check_project_slug_accepts(slug: str) -> None:
    assert pre.check_project_slug(slug) is None


@pytest.mark.parametrize(
    "slug",
    [
        "Flask-Service",
        "flask service",
        "-service",
        "service-",
        "my--service",
        "my_service",
        "my.service",
        "",
    ],
)
def test_check_project_slug_rejects(slug: str) -> None:
    error = pre.check_project_slug(slug)
    assert error is not None
    assert error.startswith(f"project_slug {slug!r} is invalid")


@pytest.mark.parametrize("name", ["flask_service", "billing", "api_v2", "a", "my__pkg"])
def test_check_package_name_accepts(name: str) -> None:
    assert pre.check_package_name(name) is None


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("class", "keyword"),
        ("match", "keyword"),  # soft keyword
        ("json", "standard library"),
        ("os", "standard library"),
        ("test", "dependency"),
        ("flask", "dependency"),
        ("celery", "dependency"),
        ("redis", "dependency"),
        ("sqlalchemy", "dependency"),
        ("tests", "dependency"),
        ("my-pkg", "identifier"),
        ("MyPkg", "identifier"),
        ("1pkg", "identifier"),
        ("_pkg", "identifier"),
        ("café", "identifier"),
        ("", "identifier"),
    ],
)
def test_check_package_name_rejects(name: str, reason: str) -> None:
    error = pre.check_package_name(name)
    assert error is not None
    assert error.startswith(f"package_name {name!r} is invalid")
    assert reason in error


@pytest.mark.parametrize("email", ["you@example.com", "a.b+tag@mail.example.org"])
def test_check_email_accepts(email: str) -> None:
    assert pre.check_email(email) is None


@pytest.mark.parametrize(
    "email",
    ["you.example.com", "you@", "@example.com", "you@example", "a b@example.com", ""],
)
def test_check_email_rejects(email: str) -> None:
    error = pre.check_email(email)
    assert error is not None
    assert error.startswith(f"email {email!r} is invalid")


@pytest.mark.parametrize("value", ["Flask Service", "Ada O'Neil", "x"])
def test_check_required_accepts(value: str) -> None:
    assert pre.check_required("author_name", value) is None


@pytest.mark.parametrize(
    "value", ["", "   ", "two\nlines", 'say "hi"', "back\\slash"], ids=repr
)
def test_check_required_rejects(value: str) -> None:
    error = pre.check_required("description", value)
    assert error is not None
    assert error.startswith(f"description {value!r} is invalid")


def test_validate_accepts_the_defaults() -> None:
    assert pre.validate(dict(VALID_ANSWERS)) == []


def test_validate_reports_every_problem_in_prompt_order() -> None:
    answers = {
        **VALID_ANSWERS,
        "email": "nobody",
        "project_slug": "Bad Slug",
        "project_name": "",
    }
    problems = pre.validate(answers)
    assert [problem.split()[0] for problem in problems] == [
        "project_name",
        "project_slug",
        "email",
    ]


# --- post_gen_project: one step at a time ------------------------------------


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The post hook works relative to the cwd (the new project)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_install_license_keeps_only_the_chosen_text(in_tmp: Path) -> None:
    licenses = in_tmp / "LICENSES"
    licenses.mkdir()
    for name in ("MIT", "Apache-2.0", "Proprietary"):
        (licenses / f"{name}.txt").write_text(f"{name} text\n", encoding="utf-8")

    post.install_license("Apache-2.0")

    assert (in_tmp / "LICENSE").read_text(encoding="utf-8") == "Apache-2.0 text\n"
    assert not licenses.exists()


def test_remove_paths_removes_files_and_directories(in_tmp: Path) -> None:
    (in_tmp / "tests").mkdir()
    (in_tmp / "tests" / "test_postgresql.py").write_text("", encoding="utf-8")
    (in_tmp / "deploy" / "celery").mkdir(parents=True)
    (in_tmp / "deploy" / "celery" / "worker.conf").write_text("", encoding="utf-8")
    (in_tmp / "keep.txt").write_text("", encoding="utf-8")

    post.remove_paths(["tests/test_postgresql.py", "deploy", "does/not/exist"])

    assert sorted(p.name for p in in_tmp.iterdir()) == ["keep.txt", "tests"]
    assert list((in_tmp / "tests").iterdir()) == []


@pytest.mark.parametrize("database", choice_options()["database"])
def test_paths_to_remove_exist_in_the_template(database: str) -> None:
    """A typo in the list would silently leave the file in every bake."""
    # Package paths as the template spells them, before rendering.
    answers = {
        **VALID_ANSWERS,
        "database": database,
        "package_name": "{{cookiecutter.package_name}}",
    }
    for path in post.paths_to_remove(answers):
        assert (TEMPLATE_DIR / path).exists(), f"{path} is not in the template"


def test_paths_to_remove_drops_postgresql_files_only_without_postgresql() -> None:
    with_postgresql = post.paths_to_remove({**VALID_ANSWERS, "database": "postgresql"})
    with_sqlite = post.paths_to_remove({**VALID_ANSWERS, "database": "sqlite"})
    assert set(with_sqlite) > set(with_postgresql)


@pytest.mark.parametrize("database", choice_options()["database"])
@pytest.mark.parametrize("use_celery", choice_options()["use_celery"])
def test_every_combination_has_its_locks_in_the_template(
    database: str, use_celery: str
) -> None:
    answers = {**VALID_ANSWERS, "database": database, "use_celery": use_celery}
    lock_dir = TEMPLATE_DIR / post.LOCKS_DIR / post.lock_set_name(answers)
    for name in post.LOCK_FILES:
        assert (lock_dir / name).is_file(), f"{lock_dir / name}: run `make lock`"


def test_lock_set_names_differ_per_combination() -> None:
    names = {
        post.lock_set_name({"database": database, "use_celery": celery})
        for database in choice_options()["database"]
        for celery in choice_options()["use_celery"]
    }
    assert len(names) == len(choice_options()["database"]) * len(
        choice_options()["use_celery"]
    )


def test_install_lock_files_keeps_only_the_chosen_pair(in_tmp: Path) -> None:
    for set_name in ("sqlite-nocelery", "postgresql-celery"):
        (in_tmp / post.LOCKS_DIR / set_name).mkdir(parents=True)
        for name in post.LOCK_FILES:
            path = in_tmp / post.LOCKS_DIR / set_name / name
            path.write_text(f"{set_name} {name}\n", encoding="utf-8")

    post.install_lock_files({"database": "sqlite", "use_celery": "n"})

    requirements = in_tmp / "requirements"
    assert sorted(p.name for p in requirements.iterdir()) == sorted(post.LOCK_FILES)
    for name in post.LOCK_FILES:
        text = (requirements / name).read_text(encoding="utf-8")
        assert text == f"sqlite-nocelery {name}\n"


def test_next_steps_names_the_directory_and_make_targets() -> None:
    text = post.next_steps({**VALID_ANSWERS, "project_slug": "billing-api"})
    assert "cd billing-api" in text
    assert "make run" in text
    assert ".env" in text
    assert "make test" in text


def parse_env(text: str) -> dict[str, str]:
    """``KEY=value`` lines of an env file; values must need no quoting."""
    settings = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=value: {line!r}"
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", key), line
        assert not re.search(r"[\s\"'$`\\]", value), f"value needs quoting: {line!r}"
        settings[key] = value
    return settings


# --- whole bakes --------------------------------------------------------------

INVALID_ANSWERS = [
    ("project_slug", "Flask-Service"),
    ("project_slug", "flask service"),
    ("package_name", "class"),
    ("package_name", "json"),
    ("package_name", "flask"),
    ("package_name", "celery"),
    ("package_name", "redis"),
    ("package_name", "test"),
    ("package_name", "my-pkg"),
    ("package_name", "MyPkg"),
    ("email", "you.example.com"),
    ("email", 'you"@example.com'),  # would break the TOML string in pyproject
    ("project_name", ""),
    ("project_name", "   "),
]
# Cookiecutter itself refuses a value outside a choice list given on the
# command line (interactive prompts offer only the choices), with a traceback
# of its own the template cannot reach; the test below asserts only the line.
INVALID_CHOICES = [
    ("database", "mysql"),
    ("python_version", "3.10"),
    # Every choice option, including ones added later, rejects unknown values.
    *((key, "no-such-choice") for key in choice_options()),
]


@pytest.mark.parametrize(
    ("field", "value"),
    INVALID_ANSWERS + INVALID_CHOICES,
    ids=[f"{field}={value!r}" for field, value in INVALID_ANSWERS + INVALID_CHOICES],
)
def test_invalid_answer_stops_the_bake(
    tmp_path: Path, cookiecutter_config: Path, field: str, value: str
) -> None:
    output_dir = tmp_path / "out"
    output_dir.mkdir()

    result = bake_cli(output_dir, cookiecutter_config, **{field: value})

    assert result.returncode != 0, result.stdout
    # One line says which answer is wrong: the field and the value.
    token = value.strip() or repr(value)
    assert any(
        field in line and token in line for line in result.stdout.splitlines()
    ), f"no line names {field} and {token}:\n{result.stdout}"
    assert list(output_dir.iterdir()) == [], "the bake left files behind"


@pytest.mark.parametrize(
    ("field", "value"),
    INVALID_ANSWERS,
    ids=[f"{field}={value!r}" for field, value in INVALID_ANSWERS],
)
def test_invalid_answer_prints_one_line_and_no_traceback(
    tmp_path: Path, cookiecutter_config: Path, field: str, value: str
) -> None:
    """What the user reads is the problem, not a crash: no traceback, no
    "hook script failed", nothing but the line naming the field."""
    result = bake_cli(tmp_path / "out", cookiecutter_config, **{field: value})

    assert result.returncode == 1, result.stdout
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    assert lines[0].startswith(f"ERROR: {field} "), result.stdout
    assert "Traceback" not in result.stdout
    assert list((tmp_path / "out").iterdir()) == []


def tree(project: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path of a bake: its permission bits and, for files, its bytes."""
    return {
        str(path.relative_to(project)): (
            stat.S_IMODE(path.stat().st_mode),
            path.read_bytes() if path.is_file() else None,
        )
        for path in sorted(project.rglob("*"))
    }


def test_same_answers_give_the_same_files_and_no_env(bake) -> None:
    """Nothing random in what the hooks write: ``cruft update`` renders the
    old and the new template with the hooks, and any random byte would show
    up as a change (or a ``.rej``) in every update."""
    first, second = bake(), bake()

    assert not (first / ".env").exists()
    assert tree(first) == tree(second)


def example_secret_key(project: Path) -> str:
    """The placeholder ``SECRET_KEY`` the project's config refuses in
    production (``config.EXAMPLE_SECRET_KEY``), read from its source, the one
    place it is defined (importing the config needs the project installed)."""
    (config,) = project.glob("src/*/config.py")
    text = config.read_text(encoding="utf-8")
    found = re.search(r'^EXAMPLE_SECRET_KEY\b[^=]*= "([^"]+)"', text, re.MULTILINE)
    assert found, f"no EXAMPLE_SECRET_KEY = '...' in {config}"
    return found.group(1)


def make_env(project: Path) -> str:
    """The project's ``make .env``, with this interpreter as its PYTHON."""
    result = run(["make", ".env", f"PYTHON={sys.executable}"], project)
    assert result.returncode == 0, result.stdout
    return result.stdout


def test_make_env_writes_a_private_env_with_a_fresh_secret(bake) -> None:
    """The first ``make run`` (or ``make .env``) writes ``.env`` from
    ``.env.example``, without the virtualenv; git never sees it."""
    first, second = bake(), bake()
    example = (first / ".env.example").read_text(encoding="utf-8")
    placeholder = example_secret_key(first)
    assert f"SECRET_KEY={placeholder}\n" in example

    secrets = []
    for project in (first, second):
        make_env(project)
        env = project / ".env"
        assert stat.S_IMODE(env.stat().st_mode) == 0o600
        text = env.read_text(encoding="utf-8")
        settings = parse_env(text)
        assert settings["APP_ENV"] == "development"
        assert SECRET_KEY_RE.fullmatch(settings["SECRET_KEY"])
        assert placeholder not in text
        assert text == example.replace(placeholder, settings["SECRET_KEY"])
        secrets.append(settings["SECRET_KEY"])
    assert secrets[0] != secrets[1]

    # Made once: a second run keeps the secret (sessions, signed links).
    assert "up to date" in make_env(first)
    kept = parse_env((first / ".env").read_text(encoding="utf-8"))
    assert kept["SECRET_KEY"] == secrets[0]
    assert run(["git", "init", "--quiet"], first).returncode == 0
    ignored = run(["git", "check-ignore", ".env"], first)
    assert ignored.returncode == 0, ".env is not git-ignored"


def test_make_env_refuses_an_example_without_a_secret_key_line(bake) -> None:
    project = bake()
    example = project / ".env.example"
    example.write_text(
        example.read_text(encoding="utf-8").replace("\nSECRET_KEY=", "\n# SECRET"),
        encoding="utf-8",
    )

    result = run(["make", ".env", f"PYTHON={sys.executable}"], project)

    assert result.returncode != 0
    assert "needs one SECRET_KEY= line" in result.stdout
    assert not (project / ".env").exists()


LICENSE_MARKERS = {
    "MIT": "Permission is hereby granted, free of charge",
    "BSD-3-Clause": "Redistribution and use in source and binary forms",
    "Apache-2.0": "Apache License\n                           Version 2.0",
    "Proprietary": "All rights reserved.",
}


@pytest.mark.parametrize("license_name", choice_options()["open_source_license"])
def test_bake_installs_the_chosen_license(bake, license_name: str) -> None:
    assert license_name in LICENSE_MARKERS, f"add a marker for {license_name}"

    project = bake(open_source_license=license_name, author_name="Ada Lovelace")

    text = (project / "LICENSE").read_text(encoding="utf-8")
    assert LICENSE_MARKERS[license_name] in text
    for other, marker in LICENSE_MARKERS.items():
        if other != license_name:
            assert marker not in text, f"{license_name} LICENSE contains {other}"
    assert "Ada Lovelace" in text
    assert str(datetime.now(UTC).year) in text
    assert not (project / "LICENSES").exists()


def test_bake_drops_the_files_of_options_not_chosen(bake) -> None:
    sqlite = bake(database="sqlite")
    postgresql = bake(database="postgresql")

    dropped = post.paths_to_remove({**VALID_ANSWERS, "database": "sqlite"})
    kept = post.paths_to_remove({**VALID_ANSWERS, "database": "postgresql"})
    for path in dropped:
        assert not (sqlite / path).exists(), path
        if path not in kept:
            assert (postgresql / path).exists(), path


def test_bake_derives_slug_and_package_from_the_name(
    tmp_path: Path, cookiecutter_config: Path
) -> None:
    result = bake_cli(tmp_path, cookiecutter_config, project_name="Acme Billing_API")

    assert result.returncode == 0, result.stdout
    project = tmp_path / "acme-billing-api"
    assert (project / "src" / "acme_billing_api").is_dir()
    # The post hook tells the user what to do next.
    assert "cd acme-billing-api" in result.stdout
    assert "make run" in result.stdout
    assert "make test" in result.stdout


# Names a new user types, and what the template derives from them: accents
# folded to ASCII, punctuation dropped, separators collapsed; a package name
# cannot start with a digit, so it gets ``pkg_`` in front.
ORDINARY_NAMES = [
    ("Café API", "cafe-api", "cafe_api"),
    ("Acme.io API", "acme-io-api", "acme_io_api"),
    ("Bob's Service", "bobs-service", "bobs_service"),
    ("Billing API (v2)", "billing-api-v2", "billing_api_v2"),
    ("Billing  API", "billing-api", "billing_api"),
    ("2fa Service", "2fa-service", "pkg_2fa_service"),
]


@pytest.mark.parametrize(
    ("name", "slug", "package"), ORDINARY_NAMES, ids=[n for n, _, _ in ORDINARY_NAMES]
)
def test_ordinary_names_bake_with_their_defaults(
    tmp_path: Path, cookiecutter_config: Path, name: str, slug: str, package: str
) -> None:
    result = bake_cli(tmp_path, cookiecutter_config, project_name=name)

    assert result.returncode == 0, result.stdout
    project = tmp_path / slug
    assert (project / "src" / package / "__init__.py").is_file()
    assert f'name = "{slug}"' in (project / "pyproject.toml").read_text("utf-8")
    lint = run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], project)
    assert lint.returncode == 0, lint.stdout
    formatting = run(
        [sys.executable, "-m", "ruff", "format", "--no-cache", "--check", "."],
        project,
    )
    assert formatting.returncode == 0, formatting.stdout
