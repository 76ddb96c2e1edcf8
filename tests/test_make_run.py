"""The template's ``make run`` bakes the demo again only when the template
changed, and keeps what the demo built: its virtualenv, ``instance/`` (the
SQLite database, the local broker) and ``.env``."""

from __future__ import annotations

import os
from pathlib import Path

from template_tools.process import run
from template_tools.template import REPO_ROOT

KEPT = (".venv/installed-marker", "instance/app.db", ".env")


def bake_demo(run_dir: Path) -> str:
    """The recipe ``make run`` depends on, without serving; ``-o venv``
    leaves the template's own virtualenv (this test's) alone."""
    target = f"{run_dir}/.baked"
    command = ["make", "--no-print-directory", "-o", "venv", f"RUN_DIR={run_dir}"]
    result = run([*command, target], REPO_ROOT)
    assert result.returncode == 0, result.stdout
    return result.stdout


def test_make_run_bakes_again_only_on_change_and_keeps_the_demo_state(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "demo"
    bake_demo(run_dir)
    (project,) = [path for path in run_dir.iterdir() if path.is_dir()]
    for name in KEPT:
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(name, encoding="utf-8")
    (project / "stale.txt").write_text("not in the template\n", encoding="utf-8")
    pyproject_time = (project / "pyproject.toml").stat().st_mtime_ns

    # Nothing changed: no bake at all.
    assert "cookiecutter" not in bake_demo(run_dir)
    assert (project / "stale.txt").exists()

    # The template is newer than the last bake: a fresh bake, state kept.
    os.utime(run_dir / ".baked", (0, 0))
    assert "cookiecutter" in bake_demo(run_dir)
    assert not (project / "stale.txt").exists()
    for name in KEPT:
        assert (project / name).read_text(encoding="utf-8") == name
    # An unchanged pyproject.toml keeps its time: the project's install stamp
    # stays newer, so its `make install` reinstalls nothing.
    assert (project / "pyproject.toml").stat().st_mtime_ns == pyproject_time
    assert not Path(f"{run_dir}.next").exists()
