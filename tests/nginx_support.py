"""nginx helpers shared by the template's nginx and end-to-end tests."""

from __future__ import annotations

import re
import shutil
import socket
from pathlib import Path

import pytest

from template_support import is_ci, run

CONF = Path("deploy") / "nginx" / "nginx.conf"

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
