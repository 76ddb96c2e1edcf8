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
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from template_support import bake_into, is_ci, run

CONF = Path("deploy") / "nginx" / "nginx.conf"
GUNICORN_CONF = Path("deploy") / "gunicorn.conf.py"

# Lines of the shipped config a deployment or a test swaps, each present once.
LISTEN = "listen 80;"
UPSTREAM = "server 127.0.0.1:8000;"
STATIC = "alias /srv/app/static/;"
EXPORTS = "alias /srv/app/exports/;"
ACCESS_LOG = "access_log /var/log/nginx/access.log json;"
HTTP_BLOCK = "http {"


def require_nginx() -> str:
    """Path of the nginx binary; skip without one, fail under CI=true
    (``make test`` installs it there)."""
    found = shutil.which("nginx")
    if found is None and Path("/usr/sbin/nginx").is_file():
        found = "/usr/sbin/nginx"
    if found is None:
        message = "nginx is not installed"
        if is_ci():
            pytest.fail(f"{message}; CI=true requires it")
        pytest.skip(message)
    return found


def mime_types(nginx: str) -> Path:
    """The mime.types beside nginx's own compiled-in config."""
    result = run([nginx, "-V"], cwd=None, timeout=30)
    match = re.search(r"--conf-path=(\S+)", result.stdout)
    conf_dir = Path(match.group(1)).parent if match else Path("/etc/nginx")
    path = conf_dir / "mime.types"
    if not path.is_file():
        pytest.fail(f"nginx has no mime.types at {path}")
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def replace_once(text: str, old: str, new: str) -> str:
    """``str.replace`` of a line that must occur exactly once, so a test or a
    deployment script swapping it cannot miss it or hit a second one."""
    count = text.count(old)
    assert count == 1, f"{old!r} occurs {count} times in nginx.conf"
    return text.replace(old, new)


def render_for_prefix(
    shipped: str, prefix: Path, listen_port: int, upstream_port: int
) -> str:
    """The shipped config, runnable by a non-root user under ``prefix``:
    listen and upstream on loopback ports, static files, exports, logs, pid
    and temp files all inside ``prefix``."""
    for name in ("static", "exports", "logs", "temp"):
        (prefix / name).mkdir(parents=True, exist_ok=True)
    text = replace_once(shipped, LISTEN, f"listen 127.0.0.1:{listen_port};")
    text = replace_once(text, UPSTREAM, f"server 127.0.0.1:{upstream_port};")
    text = replace_once(text, STATIC, f"alias {prefix / 'static'}/;")
    text = replace_once(text, EXPORTS, f"alias {prefix / 'exports'}/;")
    text = replace_once(
        text, ACCESS_LOG, f"access_log {prefix / 'logs' / 'access.log'} json;"
    )
    temp_paths = "".join(
        f"    {kind}_temp_path {prefix / 'temp' / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = replace_once(text, HTTP_BLOCK, f"{HTTP_BLOCK}\n{temp_paths}")
    main_paths = (
        f"pid {prefix / 'logs' / 'nginx.pid'};\n"
        f"error_log {prefix / 'logs' / 'error.log'} warn;\n"
    )
    return main_paths + text


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
