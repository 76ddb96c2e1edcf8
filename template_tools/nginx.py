"""The shipped nginx configs run on loopback: rendered for a private prefix
and ports, started, and spoken to in raw HTTP (malformed requests included),
for the nginx and end-to-end tests and the benchmarks."""

from __future__ import annotations

import ast
import contextlib
import http.client
import json
import re
import shutil
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from template_tools.process import Service, background, run

NGINX_DIR = Path("deploy") / "nginx"
# The main configs (plain HTTP; TLS-terminating) and the snippets both include.
CONF = NGINX_DIR / "nginx.conf"
TLS_CONF = NGINX_DIR / "nginx-tls.conf"
SNIPPETS = NGINX_DIR / "snippets"

# Lines of the shipped config a deployment or a test swaps, each present once
# in a main config and its snippets.
LISTEN = "listen 80;"
TLS_LISTEN = "listen 443 ssl;"
CERTIFICATE = "ssl_certificate /etc/nginx/tls/fullchain.pem;"
CERTIFICATE_KEY = "ssl_certificate_key /etc/nginx/tls/privkey.pem;"
UPSTREAM = "server 127.0.0.1:8000;"
STATIC = "alias /srv/app/static/;"
EXPORTS = "alias /srv/app/exports/;"  # use_celery=y only
ACCESS_LOG = "access_log /var/log/nginx/access.log json;"
HTTP_BLOCK = "http {"


def find_nginx() -> str | None:
    """Path of the nginx binary (root's ``/usr/sbin`` may be off PATH), or
    ``None``; ``make test`` installs it when it can."""
    found = shutil.which("nginx")
    if found is None and Path("/usr/sbin/nginx").is_file():
        found = "/usr/sbin/nginx"
    return found


def mime_types(nginx: str) -> Path:
    """The mime.types beside nginx's own compiled-in config."""
    result = run([nginx, "-V"], cwd=None, timeout=30)
    match = re.search(r"--conf-path=(\S+)", result.stdout)
    conf_dir = Path(match.group(1)).parent if match else Path("/etc/nginx")
    path = conf_dir / "mime.types"
    if not path.is_file():
        raise FileNotFoundError(f"nginx has no mime.types at {path}")
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def replace_once(text: str, old: str, new: str) -> str:
    """``str.replace`` of a line that must occur exactly once, so a test or a
    deployment script swapping it cannot miss it or hit a second one."""
    count = text.count(old)
    if count != 1:
        raise ValueError(f"{old!r} occurs {count} times in nginx.conf")
    return text.replace(old, new)


def shipped_files(project: Path, main: Path = CONF) -> dict[Path, str]:
    """A main config and every snippet, by path relative to the config's
    directory (``snippets/http.conf``...), as shipped."""
    files = {Path(main.name): (project / main).read_text(encoding="utf-8")}
    for snippet in sorted((project / SNIPPETS).glob("*.conf")):
        files[Path(SNIPPETS.name) / snippet.name] = snippet.read_text("utf-8")
    return files


def shipped_text(project: Path, main: Path = CONF) -> str:
    """A main config and its snippets as one text, for checks of what the
    configuration holds wherever it is."""
    return "\n".join(shipped_files(project, main).values())


def replace_in_files(
    files: dict[Path, str], old: str, new: str, *, optional: bool = False
) -> None:
    """``replace_once`` over a main config and its snippets together: ``old``
    occurs in exactly one of them, once (or nowhere, when ``optional``)."""
    holders = [name for name, text in files.items() if old in text]
    if optional and not holders:
        return
    if len(holders) != 1:
        raise ValueError(f"{old!r} occurs in {holders}")
    files[holders[0]] = replace_once(files[holders[0]], old, new)


def render_for_prefix(
    project: Path,
    prefix: Path,
    listen_port: int,
    upstream_port: int,
    nginx: str,
    *,
    main: Path = CONF,
    swaps: dict[str, str] | None = None,
) -> Path:
    """The shipped ``main`` config and its snippets, written under
    ``prefix/conf`` beside nginx's mime.types and runnable there by a
    non-root user: listen and upstream on loopback ports, static files,
    exports, logs, pid and temp files all inside ``prefix``; ``swaps``
    replaces further lines (each once). Returns the main config's path."""
    for name in ("static", "exports", "logs", "temp", "conf"):
        (prefix / name).mkdir(parents=True, exist_ok=True)
    files = shipped_files(project, main)
    replace_in_files(files, LISTEN, f"listen 127.0.0.1:{listen_port};")
    replace_in_files(files, UPSTREAM, f"server 127.0.0.1:{upstream_port};")
    replace_in_files(files, STATIC, f"alias {prefix / 'static'}/;")
    replace_in_files(files, EXPORTS, f"alias {prefix / 'exports'}/;", optional=True)
    replace_in_files(
        files, ACCESS_LOG, f"access_log {prefix / 'logs' / 'access.log'} json;"
    )
    for old, new in (swaps or {}).items():
        replace_in_files(files, old, new)
    temp_paths = "".join(
        f"    {kind}_temp_path {prefix / 'temp' / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf_dir = prefix / "conf"
    main_name = Path(main.name)
    files[main_name] = (
        f"pid {prefix / 'logs' / 'nginx.pid'};\n"
        f"error_log {prefix / 'logs' / 'error.log'} warn;\n"
        + replace_once(files[main_name], HTTP_BLOCK, f"{HTTP_BLOCK}\n{temp_paths}")
    )
    for name, text in files.items():
        (conf_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (conf_dir / name).write_text(text, encoding="utf-8")
    # `include mime.types;` is relative to the config's directory, as it is
    # in /etc/nginx of the official image.
    shutil.copy(mime_types(nginx), conf_dir / "mime.types")
    return conf_dir / main_name


@dataclass
class Answer:
    """One HTTP answer, as the client got it."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def problem(self, status: int) -> dict[str, Any]:
        """The problem+json body of an error answer with ``status``, whose
        ``request_id`` is the response's one X-Request-ID; an
        ``AssertionError`` (a failed check, for the tests) otherwise."""
        content_type = self.headers.get_content_type()
        if self.status != status or content_type != "application/problem+json":
            raise AssertionError((self.status, content_type, self.body[:500]))
        problem: dict[str, Any] = json.loads(self.body)
        request_ids = self.headers.get_all("X-Request-ID")
        if (
            problem["status"] != status
            or not problem["title"]
            or request_ids != [problem["request_id"]]
        ):
            raise AssertionError((problem, request_ids))
        return problem


def exchange(
    port: int, request: bytes, *, tls: bool = False, timeout: float = 15
) -> Answer:
    """Send ``request`` as raw bytes (malformed ones included) on a fresh
    connection to 127.0.0.1:``port``, over TLS without verifying the
    certificate when ``tls``, and read the one answer."""
    sock: socket.socket = socket.create_connection(("127.0.0.1", port), timeout)
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        sock = context.wrap_socket(sock)
    with sock:
        sock.sendall(request)
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        return Answer(answer.status, answer.headers, answer.read())


def get(path: str, headers: dict[str, str] | None = None) -> bytes:
    """A well-formed GET request for ``path``, closing the connection."""
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def wait_for_port(port: int, service: Service, seconds: float = 30) -> None:
    """Until something accepts connections on 127.0.0.1:``port``; fail with
    the service's log if it exits first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise AssertionError(f"{service.name} exited\n{service.tail()}")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}\n{service.tail()}")


@contextlib.contextmanager
def running_nginx(nginx: str, conf: Path, prefix: Path, port: int) -> Iterator[Service]:
    """nginx in the foreground with ``conf``, until the block ends."""
    command = [nginx, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"]
    with background("nginx", command, prefix, {}, prefix / "logs") as service:
        wait_for_port(port, service)
        yield service


def gunicorn_settings(project: Path) -> dict[str, Any]:
    """What the shipped gunicorn config runs with by default, read without
    running it (gunicorn is not installed here): the defaults of
    ``GunicornSettings`` in the package's serving.py (``bind``, ``timeout``...)
    and the literal settings of deploy/gunicorn.conf.py (``limit_request_*``)."""
    (serving,) = project.glob("src/*/serving.py")
    found: dict[str, Any] = {}
    for node in ast.walk(ast.parse(serving.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ClassDef) and node.name == "GunicornSettings":
            for field in node.body:
                if not isinstance(field, ast.AnnAssign) or field.value is None:
                    continue
                value = field.value
                if isinstance(value, ast.Call):  # Field(default, ...)
                    value = value.args[0] if value.args else ast.Constant(None)
                if isinstance(field.target, ast.Name):
                    with contextlib.suppress(ValueError):
                        found[field.target.id] = ast.literal_eval(value)
    conf = project / "deploy" / "gunicorn.conf.py"
    for node in ast.parse(conf.read_text(encoding="utf-8")).body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant)
        ):
            found[node.targets[0].id] = node.value.value
    return found
