"""The READMEs' quick starts work as printed.

The template's ``make run`` bakes the demo and serves it, as a new user runs
it; then the token and curl lines of both READMEs (the template's, and the
baked project's own), and the curl line ``make run`` prints, run in bash as
a reader would paste them. Only the demo's directory and port differ from
the printed text: a test must not take ``build/demo`` or port 5000 from a
developer's own demo.
"""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest

from prerequisites import require_python
from template_tools.environment import clean_env
from template_tools.nginx import free_port
from template_tools.process import background, run, wait_for
from template_tools.template import REPO_ROOT, defaults

pytestmark = pytest.mark.slow

PRINTED_DEMO = "build/demo"
PRINTED_ADDRESS = "127.0.0.1:5000"


def bash_block(markdown: str, containing: str) -> str:
    """The one ```bash block of ``markdown`` holding ``containing``."""
    blocks = re.findall(r"```bash\n(.*?)```", markdown, flags=re.DOTALL)
    (block,) = [block for block in blocks if containing in block]
    return block


def serving(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
            return True
    except OSError:
        return False


def run_pasted(script: str, cwd: Path, env: dict[str, str]) -> str:
    """``script`` run as pasted into bash, stopping at the first failing
    command. Not ``pipefail``: ``curl ... | head -n 3`` ends curl's write
    when head has its lines, which no shell a reader types in reports."""
    result = run(["bash", "-e", "-c", script], cwd, env, timeout=120)
    assert result.returncode == 0, f"{script}\n---\n{result.stdout}"
    assert "Unauthorized" not in result.stdout, result.stdout
    return result.stdout


def test_the_quick_start_lines_work_against_make_run(
    tmp_path: Path, uv_cache_dir: Path
) -> None:
    python = require_python(defaults()["python_version"])
    port = free_port()
    demo = tmp_path / "demo"
    env = clean_env(UV_CACHE_DIR=str(uv_cache_dir), UV_LINK_MODE="copy")
    here = {PRINTED_DEMO: str(demo), PRINTED_ADDRESS: f"127.0.0.1:{port}"}

    def localized(script: str) -> str:
        for printed, actual in here.items():
            script = script.replace(printed, actual)
        return script

    # `-o venv`: the template's own tools are this test's, already installed.
    command = ["make", "--no-print-directory", "-o", "venv", "run"]
    command += [f"RUN_DIR={demo}", f"PORT={port}", f"PYTHON={python}"]
    with background("make-run", command, REPO_ROOT, env, tmp_path) as make_run:
        wait_for(
            lambda: serving(port) or make_run.process.poll() is not None,
            600,
            "make run to serve the demo",
        )
        assert make_run.process.poll() is None, make_run.tail()

        # The curl line make run printed, with the token it issued.
        printed = make_run.log.read_text(encoding="utf-8", errors="replace")
        (curl_line,) = [
            line.strip() for line in printed.splitlines() if "curl -H" in line
        ]
        assert '"items"' in run_pasted(curl_line, tmp_path, env)

        # The template README's lines, from the repository's root.
        script = bash_block((REPO_ROOT / "README.md").read_text(), "token | tail")
        output = run_pasted(localized(script), REPO_ROOT, env)
        assert '"items"' in output
        assert '"amount":"19.99"' in output.replace(" ", "")
        # The CSV export's header (JSON answers end without a newline).
        assert "id,owner_id,kind,amount," in output

        # The baked project's README, from the project's directory.
        (project,) = [path for path in demo.iterdir() if path.is_dir()]
        script = bash_block((project / "README.md").read_text(), "token | tail")
        output = run_pasted(localized(script), project, env)
        assert '"items"' in output
        assert '"kind":"purchase"' in output.replace(" ", "")
