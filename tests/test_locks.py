"""Every bake ships lock files that pin what its pyproject.toml asks for.

The locks are made by ``make lock`` at the template root (scripts/lock.py),
one pair per combination of the options that change dependencies. A
dependency added to or tightened in the generated pyproject without running
``make lock`` fails here, naming the requirement.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

RUNTIME_LOCK = Path("requirements") / "requirements.lock"
DEV_LOCK = Path("requirements") / "requirements-dev.lock"


def parse_lock(text: str) -> dict[str, list[tuple[Requirement, int]]]:
    """Pinned requirements of a ``uv pip compile --generate-hashes`` file,
    by canonical name, each with the number of hashes it carries."""
    entries: dict[str, list[tuple[Requirement, int]]] = {}
    current: list[tuple[Requirement, int]] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0].isspace():
            if stripped.startswith("--hash=") and current:
                requirement, hashes = current[-1]
                current[-1] = (requirement, hashes + 1)
            continue
        requirement = Requirement(stripped.removesuffix("\\").strip())
        current = entries.setdefault(canonicalize_name(requirement.name), [])
        current.append((requirement, 0))
    return entries


def pinned_version(requirement: Requirement) -> str:
    (specifier,) = requirement.specifier
    assert specifier.operator == "==", f"{requirement} is not pinned"
    return specifier.version


def unmet(
    wanted: list[Requirement], lock: dict[str, list[tuple[Requirement, int]]]
) -> list[str]:
    """The requirements of ``wanted`` no pin of ``lock`` satisfies."""
    problems = []
    for requirement in wanted:
        pins = lock.get(canonicalize_name(requirement.name), [])
        versions = [pinned_version(pin) for pin, _ in pins]
        allowed = requirement.specifier
        if not any(allowed.contains(v, prereleases=True) for v in versions):
            found = ", ".join(versions) or "nothing"
            problems.append(f"{requirement} (lock pins {found})")
    return problems


@pytest.fixture
def baked(stack_bake: tuple[Path, dict[str, str]]) -> Path:
    return stack_bake[0]


def project_requirements(project: Path) -> tuple[list[Requirement], list[Requirement]]:
    """(runtime, runtime + dev) requirements of the baked pyproject."""
    pyproject = tomllib.loads((project / "pyproject.toml").read_text("utf-8"))
    runtime = [Requirement(item) for item in pyproject["project"]["dependencies"]]
    dev = [
        Requirement(item)
        for item in pyproject["project"]["optional-dependencies"]["dev"]
    ]
    return runtime, runtime + dev


def read_lock(project: Path, path: Path) -> dict[str, list[tuple[Requirement, int]]]:
    return parse_lock((project / path).read_text(encoding="utf-8"))


def test_bake_keeps_only_its_own_pair_of_locks(baked: Path) -> None:
    assert sorted(p.name for p in (baked / "requirements").iterdir()) == [
        DEV_LOCK.name,
        RUNTIME_LOCK.name,
    ]


def test_runtime_lock_pins_every_runtime_requirement(baked: Path) -> None:
    runtime, _ = project_requirements(baked)
    assert unmet(runtime, read_lock(baked, RUNTIME_LOCK)) == [], "run `make lock`"


def test_dev_lock_pins_every_runtime_and_dev_requirement(baked: Path) -> None:
    _, everything = project_requirements(baked)
    assert unmet(everything, read_lock(baked, DEV_LOCK)) == [], "run `make lock`"


def test_runtime_lock_leaves_the_dev_tools_out(baked: Path) -> None:
    runtime, everything = project_requirements(baked)
    dev_only = {canonicalize_name(r.name) for r in everything} - {
        canonicalize_name(r.name) for r in runtime
    }
    assert dev_only
    assert dev_only.isdisjoint(read_lock(baked, RUNTIME_LOCK))


@pytest.mark.parametrize("path", [RUNTIME_LOCK, DEV_LOCK], ids=lambda p: p.name)
def test_lock_pins_everything_with_hashes_and_not_the_project(
    baked: Path, path: Path
) -> None:
    lock = read_lock(baked, path)
    assert canonicalize_name(baked.name) not in lock
    text = (baked / path).read_text(encoding="utf-8")
    assert "-e " not in text
    assert "file://" not in text
    for name, pins in lock.items():
        for requirement, hashes in pins:
            pinned_version(requirement)
            assert hashes > 0, f"{name} has no hash"
    # Annotations name the baked project, not the one the locks were made in.
    assert f"via {baked.name} (pyproject.toml)" in text
    assert "cookiecutter" not in text


def test_driver_and_celery_are_locked_only_when_chosen(baked: Path) -> None:
    lock = read_lock(baked, RUNTIME_LOCK)
    pyproject = (baked / "pyproject.toml").read_text(encoding="utf-8")
    assert ("psycopg" in lock) == ('"psycopg' in pyproject)
    assert ("celery" in lock) == ('"celery' in pyproject)


# The checker itself: a stale lock must be reported.

LOCK_SAMPLE = """\
# header
flask==3.1.2 \\
    --hash=sha256:aaaa \\
    --hash=sha256:bbbb
    # via example (pyproject.toml)
async-timeout==5.0.1 ; python_full_version < '3.11.3' \\
    --hash=sha256:cccc
"""


def test_parse_lock_reads_pins_markers_and_hashes() -> None:
    lock = parse_lock(LOCK_SAMPLE)
    assert sorted(lock) == ["async-timeout", "flask"]
    ((flask, flask_hashes),) = lock["flask"]
    assert pinned_version(flask) == "3.1.2"
    assert flask_hashes == 2
    ((timeout, _),) = lock["async-timeout"]
    assert timeout.marker is not None


@pytest.mark.parametrize(
    ("requirement", "stale"),
    [
        ("flask>=3.1,<4", False),
        ("Flask>=3.1", False),
        ("flask>=3.2", True),  # tightened past the pin
        ("sentry-sdk>=2", True),  # added without relocking
    ],
)
def test_unmet_reports_what_the_lock_lacks(requirement: str, stale: bool) -> None:
    problems = unmet([Requirement(requirement)], parse_lock(LOCK_SAMPLE))
    assert bool(problems) == stale, problems
