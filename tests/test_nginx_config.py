"""The baked deploy/nginx/nginx.conf is valid nginx, passes gixy, and agrees
with deploy/gunicorn.conf.py.

nginx itself checks a copy rendered for a non-root prefix (ports and paths
swapped by plain string replacement, the way the end-to-end test runs it);
gixy checks the file exactly as shipped.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nginx_support import (
    CONF,
    free_port,
    mime_types,
    render_for_prefix,
    replace_once,
    require_nginx,
)
from template_support import bake_into, run

GUNICORN_CONF = Path("deploy") / "gunicorn.conf.py"


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory, cookiecutter_config: Path
) -> Path:
    """The default bake, shared by the checks below."""
    return bake_into(tmp_path_factory.mktemp("nginx-bake"), cookiecutter_config)


@pytest.fixture
def shipped(project: Path) -> str:
    return (project / CONF).read_text(encoding="utf-8")


def gixy(conf: Path) -> subprocess.CompletedProcess[str]:
    """gixy-ng's JSON report on ``conf`` (stdout), warnings on stderr."""
    return subprocess.run(
        [sys.executable, "-m", "gixy", "--format", "json", str(conf)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_rendered_config_passes_nginx_t(shipped: str, tmp_path: Path) -> None:
    nginx = require_nginx()
    prefix = tmp_path / "nginx"
    conf_dir = prefix / "conf"
    conf_dir.mkdir(parents=True)
    # `include mime.types;` is relative to the config's directory, as it is
    # in /etc/nginx of the official image.
    shutil.copy(mime_types(nginx), conf_dir / "mime.types")
    conf = conf_dir / "nginx.conf"
    conf.write_text(
        render_for_prefix(shipped, prefix, free_port(), free_port()),
        encoding="utf-8",
    )
    error_log = prefix / "logs" / "error.log"
    result = run(
        [nginx, "-t", "-p", str(prefix), "-c", str(conf), "-e", str(error_log)],
        cwd=prefix,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout
    assert "test is successful" in result.stdout, result.stdout


def test_shipped_config_has_no_gixy_findings(project: Path, tmp_path: Path) -> None:
    """The file as shipped, byte for byte, beside a mime.types so its
    include resolves."""
    conf = tmp_path / "nginx.conf"
    shutil.copyfile(project / CONF, conf)
    nginx_mime_types = Path("/etc/nginx/mime.types")
    if nginx_mime_types.is_file():
        shutil.copy(nginx_mime_types, tmp_path / "mime.types")
    result = gixy(conf)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == [], result.stdout


def test_gixy_does_catch_a_broken_alias(shipped: str, tmp_path: Path) -> None:
    """Guards the check above: gixy parses this file and reports the classic
    alias traversal (location without its trailing slash)."""
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        replace_once(shipped, "location /_exports/ {", "location /_exports {"),
        encoding="utf-8",
    )
    result = gixy(conf)
    assert result.returncode != 0, result.stdout + result.stderr
    plugins = {finding["plugin"] for finding in json.loads(result.stdout)}
    assert "alias_traversal" in plugins, result.stdout


def directive(text: str, name: str) -> str:
    """The argument of the one ``name ...;`` directive in ``text``."""
    values = re.findall(rf"^\s*{name}\s+([^;]+);", text, flags=re.MULTILINE)
    assert len(values) == 1, f"{name}: {values}"
    return values[0].strip()


def seconds(value: str) -> int:
    assert value.endswith("s"), value
    return int(value.removesuffix("s"))


def gunicorn_defaults(project: Path) -> dict[str, Any]:
    """Module-level ``DEFAULT_*`` constants of gunicorn.conf.py, read without
    running it (gunicorn is not installed here)."""
    tree = ast.parse((project / GUNICORN_CONF).read_text(encoding="utf-8"))
    return {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id.startswith("DEFAULT_")
    }


def test_nginx_and_gunicorn_defaults_line_up(shipped: str, project: Path) -> None:
    defaults = gunicorn_defaults(project)
    upstream = shipped[shipped.index("upstream app {") :]
    upstream = upstream[: upstream.index("}")]
    # nginx proxies to the address gunicorn binds by default.
    assert f"server {defaults['DEFAULT_BIND']};" in upstream
    # nginx drops idle upstream connections before gunicorn would.
    assert (
        seconds(directive(upstream, "keepalive_timeout"))
        < (defaults["DEFAULT_KEEPALIVE"])
    )
    # nginx waits at least as long as gunicorn lets a worker run.
    assert (
        seconds(directive(shipped, "proxy_read_timeout"))
        >= (defaults["DEFAULT_TIMEOUT"])
    )
    # = the app's MAX_CONTENT_LENGTH default, 1 MiB.
    assert directive(shipped, "client_max_body_size") == "1m"


def test_exports_are_internal_and_buffering_is_the_apps_call(shipped: str) -> None:
    """/_exports/ answers only X-Accel-Redirect (404 when asked directly), and
    nothing stops the app's X-Accel-Buffering: no from streaming."""
    assert re.search(
        r"location /_exports/ \{\s*internal;\s*alias /srv/app/exports/;\s*\}",
        shipped,
    )
    assert "proxy_ignore_headers" not in shipped
    assert directive(shipped, "proxy_buffering") == "on"


def test_metrics_are_not_served_through_nginx(shipped: str) -> None:
    """/metrics is scraped at gunicorn's address; through nginx it is a 404
    problem, whatever the app would answer."""
    assert re.search(
        r"location = /metrics \{\s*default_type application/problem\+json;"
        r"\s*return 404 '\{[^']*\"status\":404",
        shipped,
    )
