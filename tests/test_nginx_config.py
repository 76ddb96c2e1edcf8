"""The baked deploy/nginx configs (plain HTTP and TLS) are valid nginx, pass
gixy, agree with deploy/gunicorn.conf.py, and answer as the API does.

nginx itself runs a copy rendered for a non-root prefix (ports and paths
swapped by plain string replacement, the way the end-to-end test runs it)
in front of a small stand-in for the app; gixy checks the files exactly as
shipped. Every answer nginx makes itself must be problem+json with the
app's security headers, the app's own problems must pass through as they
are, and the TLS config must serve HTTPS with HSTS and redirect HTTP.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from prerequisites import require_nginx, skip_or_fail
from template_tools.nginx import (
    CERTIFICATE,
    CERTIFICATE_KEY,
    CONF,
    NGINX_DIR,
    SNIPPETS,
    TLS_CONF,
    TLS_LISTEN,
    Answer,
    exchange,
    free_port,
    get,
    gunicorn_settings,
    render_for_prefix,
    replace_once,
    running_nginx,
    shipped_text,
)
from template_tools.process import run, wait_for
from template_tools.template import bake_into

SECURITY = Path("src") / "flask_service" / "http" / "security.py"
MAINS = (CONF, TLS_CONF)
# What the stand-in app's own problems say, to tell them from nginx's.
APP_DETAIL = "Made by the app."
# proxy_read_timeout, shortened for the 504 check only.
READ_TIMEOUT = "proxy_read_timeout 35s;"


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory, cookiecutter_config: Path
) -> Path:
    """The default bake, shared by the checks below."""
    return bake_into(tmp_path_factory.mktemp("nginx-bake"), cookiecutter_config)


@pytest.fixture
def shipped(project: Path) -> str:
    """nginx.conf and its snippets, as one text."""
    return shipped_text(project)


def security_headers(project: Path) -> dict[str, str]:
    """The app's ``HEADERS`` (http/security.py), read without importing it."""
    tree = ast.parse((project / SECURITY).read_text(encoding="utf-8"))
    constants = {
        node.targets[0].id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }
    headers = constants["HEADERS"]
    assert isinstance(headers, ast.Dict)
    values: dict[str, str] = {}
    for key, value in zip(headers.keys, headers.values, strict=True):
        assert isinstance(key, ast.Constant)
        if isinstance(value, ast.Name):
            value = constants[value.id]
        values[key.value] = ast.literal_eval(value)
    return values


def gixy(conf: Path) -> subprocess.CompletedProcess[str]:
    """gixy-ng's JSON report on ``conf`` (stdout), warnings on stderr."""
    return subprocess.run(
        [sys.executable, "-m", "gixy", "--format", "json", str(conf)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def shipped_copy(project: Path, tmp_path: Path) -> Path:
    """deploy/nginx as shipped, byte for byte, beside a mime.types so its
    include resolves; returns the copy's directory."""
    copy = tmp_path / "nginx"
    shutil.copytree(project / NGINX_DIR, copy)
    nginx_mime_types = Path("/etc/nginx/mime.types")
    if nginx_mime_types.is_file():
        shutil.copy(nginx_mime_types, copy / "mime.types")
    return copy


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 and its key, made by openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        skip_or_fail("openssl is not installed")
    certificate, key = directory / "cert.pem", directory / "key.pem"
    result = run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-keyout", str(key), "-out", str(certificate), "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        cwd=directory,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout
    return certificate, key


@pytest.mark.parametrize("main", MAINS, ids=lambda main: main.name)
def test_rendered_config_passes_nginx_t(
    project: Path, tmp_path: Path, main: Path
) -> None:
    nginx = require_nginx()
    prefix = tmp_path / "nginx"
    certificate, key = self_signed(tmp_path)
    swaps = {}
    if main == TLS_CONF:
        swaps = {
            TLS_LISTEN: f"listen 127.0.0.1:{free_port()} ssl;",
            CERTIFICATE: f"ssl_certificate {certificate};",
            CERTIFICATE_KEY: f"ssl_certificate_key {key};",
        }
    conf = render_for_prefix(
        project, prefix, free_port(), free_port(), nginx, main=main, swaps=swaps
    )
    error_log = prefix / "logs" / "error.log"
    result = run(
        [nginx, "-t", "-p", str(prefix), "-c", str(conf), "-e", str(error_log)],
        cwd=prefix,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout
    assert "test is successful" in result.stdout, result.stdout


@pytest.mark.parametrize("main", MAINS, ids=lambda main: main.name)
def test_shipped_config_has_no_gixy_findings(
    project: Path, tmp_path: Path, main: Path
) -> None:
    """Each main config as shipped, with the snippets it includes."""
    result = gixy(shipped_copy(project, tmp_path) / main.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == [], result.stdout


def test_gixy_does_catch_a_broken_alias(project: Path, tmp_path: Path) -> None:
    """Guards the check above: gixy follows the includes into the snippets
    and reports the classic alias traversal (location without its trailing
    slash)."""
    copy = shipped_copy(project, tmp_path)
    server = copy / SNIPPETS.name / "server.conf"
    server.write_text(
        replace_once(
            server.read_text(encoding="utf-8"),
            "location /_exports/ {",
            "location /_exports {",
        ),
        encoding="utf-8",
    )
    result = gixy(copy / CONF.name)
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


def size(value: str) -> int:
    """An nginx size (``4k``, ``1m``, ``512``) in bytes."""
    units = {"k": 1024, "m": 1024 * 1024}
    if value[-1] in units:
        return int(value[:-1]) * units[value[-1]]
    return int(value)


def test_nginx_and_gunicorn_defaults_line_up(shipped: str, project: Path) -> None:
    defaults = gunicorn_settings(project)
    upstream = shipped[shipped.index("upstream app {") :]
    upstream = upstream[: upstream.index("}")]
    # nginx proxies to the address gunicorn binds by default.
    assert f"server {defaults['bind'][0]};" in upstream
    # nginx drops idle upstream connections before gunicorn would.
    assert seconds(directive(upstream, "keepalive_timeout")) < (defaults["keepalive"])
    # nginx waits at least as long as gunicorn lets a worker run.
    assert seconds(directive(shipped, "proxy_read_timeout")) >= (defaults["timeout"])
    # = the app's MAX_CONTENT_LENGTH default, 1 MiB.
    assert directive(shipped, "client_max_body_size") == "1m"


def test_nginx_refuses_oversized_requests_before_gunicorn(
    shipped: str, project: Path
) -> None:
    """A request line or header line nginx passes on fits one large buffer;
    the whole header, all of them. gunicorn's limits are above both, so
    gunicorn never answers such a request with its own HTML 400."""
    settings = gunicorn_settings(project)
    count, buffer = directive(shipped, "large_client_header_buffers").split()
    line_bytes, header_bytes = size(buffer), int(count) * size(buffer)
    assert line_bytes < settings["limit_request_line"] <= 8190  # its largest
    assert line_bytes < settings["limit_request_field_size"]
    # The smallest header line nginx accepts is 3 bytes ("a:\n"); nginx adds
    # a handful of its own (Host, X-Forwarded-*, X-Request-ID...).
    assert header_bytes // 3 + 16 < settings["limit_request_fields"] <= 32768


def test_security_headers_are_the_apps(project: Path) -> None:
    """nginx sends the app's security headers with the same values, hides the
    app's copies (each is sent once), and adds them to every answer."""
    headers = (project / SNIPPETS / "headers.conf").read_text(encoding="utf-8")
    sent = dict(
        re.findall(r'^add_header (\S+) "([^"]*)" always;$', headers, re.MULTILINE)
    )
    # The policy goes through a map: the one the app sent (its docs page
    # sends its own), else the API's, which nginx's own answers get.
    assert (
        "add_header Content-Security-Policy $content_security_policy always;" in headers
    )
    http_conf = (project / SNIPPETS / "http.conf").read_text(encoding="utf-8")
    policy = re.search(
        r"map \$upstream_http_content_security_policy \$content_security_policy \{"
        r'\s*"" "([^"]*)";\s*default \$upstream_http_content_security_policy;\s*\}',
        http_conf,
    )
    assert policy is not None
    sent["Content-Security-Policy"] = policy.group(1)
    assert sent == security_headers(project)
    server = (project / SNIPPETS / "server.conf").read_text(encoding="utf-8")
    for name in sent:
        assert f"proxy_hide_header {name};" in server, name


def test_exports_are_internal_and_buffering_is_the_apps_call(shipped: str) -> None:
    """/_exports/ answers only X-Accel-Redirect (404 when asked directly), and
    nothing stops the app's X-Accel-Buffering: no from streaming."""
    assert re.search(
        r"location /_exports/ \{\s*internal;\s*alias /srv/app/exports/;\s*\}",
        shipped,
    )
    assert "proxy_ignore_headers" not in shipped
    # nginx's error pages are for its own errors; the app's pass through.
    assert not re.search(r"^\s*proxy_intercept_errors", shipped, re.MULTILINE)
    assert directive(shipped, "proxy_buffering") == "on"


class StandIn(BaseHTTPRequestHandler):
    """The app as nginx sees it: problems of its own under /app/<status>,
    a stream that never ends under the export paths, an upstream that hangs
    up (/hang-up) or answers late (/late); 200 JSON elsewhere."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    security: ClassVar[dict[str, str]] = {}
    stop = threading.Event()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest shows failures, not every request."""

    def answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        try:
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # nginx gave up waiting (/late)

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        request_id = self.headers["X-Request-ID"]
        if path.startswith("/app/"):
            status = int(path.removeprefix("/app/"))
            body = json.dumps(
                {
                    "type": "about:blank",
                    "title": "From the app",
                    "status": status,
                    "detail": APP_DETAIL,
                    "request_id": request_id,
                }
            ).encode()
            headers = {
                "Content-Type": "application/problem+json",
                "X-Request-ID": request_id,
                **self.security,
            }
            if status == 405:
                headers["Allow"] = "GET, HEAD"
            self.answer(status, body, headers)
        elif path == "/hang-up":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif path == "/late":
            time.sleep(3)
            self.answer(200, b"{}", {"Content-Type": "application/json"})
        elif path.startswith("/api/events/export."):
            self.stream()
        else:
            self.answer(200, b'{"ok": true}', {"Content-Type": "application/json"})

    do_POST = do_GET

    def stream(self) -> None:
        """Chunks until the test ends or nginx goes away, unbuffered."""
        self.send_response(200)
        self.send_header("Content-Type", "text/csv")
        self.send_header("X-Accel-Buffering", "no")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while not self.stop.wait(0.2):
            try:
                self.wfile.write(b"5\r\nrow,\n\r\n")
            except OSError:
                return


@pytest.fixture(scope="module")
def stand_in(project: Path) -> Iterator[int]:
    """The stand-in app on a free port, for the module."""
    StandIn.security = security_headers(project)
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        StandIn.stop.set()
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def proxy_prefix(project: Path, stand_in: int) -> Iterator[tuple[int, Path]]:
    """nginx.conf as shipped in front of the stand-in (proxy_read_timeout
    cut to 1s, for the 504); yields nginx's port and prefix."""
    nginx = require_nginx()
    # nginx run by root serves files as `nobody`, and pytest's temporary
    # tree is private (0700): a world-searchable prefix of its own.
    prefix = Path(tempfile.mkdtemp(prefix="nginx-run-"))
    prefix.chmod(0o755)
    port = free_port()
    conf = render_for_prefix(
        project,
        prefix,
        port,
        stand_in,
        nginx,
        swaps={READ_TIMEOUT: "proxy_read_timeout 1s;"},
    )
    try:
        with running_nginx(nginx, conf, prefix, port):
            yield port, prefix
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


@pytest.fixture
def proxy(proxy_prefix: tuple[int, Path]) -> int:
    return proxy_prefix[0]


def assert_security_headers(answer: Answer, project: Path) -> None:
    """Each of the app's security headers, once, with the app's value."""
    for name, value in security_headers(project).items():
        assert answer.headers.get_all(name) == [value], (name, answer.headers)


# Requests nginx refuses itself, each with the status it must answer.
NGINX_ERRORS = {
    "bad escape in the path": (b"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "NUL in the path": (b"GET /a%00b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "no Host": (b"GET / HTTP/1.1\r\n\r\n", 400),
    "two Hosts": (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
    "bad method": (b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "folded header": (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400),
    "length and chunked": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "bad chunk": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
    ),
    "TRACE": (b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    "body over 1 MiB": (
        b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Length: 1048577\r\n\r\n",
        413,
    ),
    "URI over 4 KiB": (b"GET /" + b"a" * 4100 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "header line over 4 KiB": (
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4100 + b"\r\n\r\n",
        431,
    ),
    "header over 16 KiB": (
        b"GET / HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-H%d: %s\r\n" % (i, b"a" * 3000) for i in range(8))
        + b"\r\n",
        431,
    ),
    "unknown transfer coding": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        501,
    ),
    "HTTP/2.0 request line": (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    "/metrics": (get("/metrics"), 404),
    "error page asked for directly": (get("/_errors/bad_request"), 404),
    "export file asked for directly": (get("/_exports/x.csv"), 404),
    "missing static file": (get("/static/nothing.css"), 404),
    "upstream hangs up": (get("/hang-up"), 502),
    "upstream answers late": (get("/late"), 504),
}


@pytest.mark.parametrize("case", list(NGINX_ERRORS))
def test_nginx_errors_are_problems_with_security_headers(
    proxy: int, project: Path, case: str
) -> None:
    """Whatever nginx refuses itself is a problem+json with the request id
    and the app's security headers, never nginx's HTML page."""
    request, status = NGINX_ERRORS[case]
    answer = exchange(proxy, request)
    problem = answer.problem(status)
    assert problem["detail"] != APP_DETAIL, problem
    assert_security_headers(answer, project)
    assert "Strict-Transport-Security" not in answer.headers  # plain HTTP


@pytest.mark.parametrize("status", [400, 404, 405, 413, 500, 503])
def test_apps_problems_pass_through_untouched(
    proxy: int, project: Path, status: int
) -> None:
    """The app's own error answers reach the client as the app made them:
    its body, its Allow header, one copy of each security header and the
    request id the client sent."""
    answer = exchange(proxy, get(f"/app/{status}", {"X-Request-ID": "mine-1"}))
    problem = answer.problem(status)
    assert problem["detail"] == APP_DETAIL
    assert problem["request_id"] == "mine-1"
    assert_security_headers(answer, project)
    if status == 405:
        assert answer.headers["Allow"] == "GET, HEAD"


def test_streamed_exports_are_limited_per_address(
    proxy_prefix: tuple[int, Path], project: Path
) -> None:
    """Two streamed exports at a time per address: a third is a 429 problem
    at once, from the connection limit (not the rate limit), while the
    other two still stream and the rest of the API still answers."""
    proxy, prefix = proxy_prefix
    error_log = prefix / "logs" / "error.log"
    refusals = 'limiting connections by zone "export_conn"'
    before = error_log.read_text(encoding="utf-8").count(refusals)
    streams = []
    try:
        for path in ("/api/events/export.csv", "/api/events/export.ndjson"):
            stream = socket.create_connection(("127.0.0.1", proxy), timeout=10)
            streams.append(stream)
            stream.sendall(get(path))
            assert stream.recv(4096).startswith(b"HTTP/1.1 200"), path
        third = exchange(proxy, get("/api/events/export.csv"))
        third.problem(429)
        assert error_log.read_text(encoding="utf-8").count(refusals) == before + 1
        assert_security_headers(third, project)
        assert exchange(proxy, get("/api/events")).status == 200
    finally:
        for stream in streams:
            stream.close()


def test_access_log_lines_stay_one_json_object_each(
    proxy_prefix: tuple[int, Path],
) -> None:
    """nginx writes the stack's access log. Quotes, backslashes and control
    characters a client sends are escaped, so no client can break a line or
    forge another one; requests nginx answers itself are logged too."""
    port, prefix = proxy_prefix
    agent = 'agent "quoted" \\ {"forged": true}\x01'
    path = '/a"b\\c%0A{"forged":true}'
    exchange(port, get(path, {"User-Agent": agent, "X-Request-ID": "log-1"}))
    exchange(port, get("/metrics", {"X-Request-ID": "log-2"}))  # nginx's 404
    log = prefix / "logs" / "access.log"

    def logged() -> dict[str, Any] | None:
        """Each request's entry, once both are in (nginx logs as a request ends)."""
        lines = log.read_text(encoding="utf-8").splitlines()
        entries = {entry["request_id"]: entry for entry in map(json.loads, lines)}
        return entries if {"log-1", "log-2"} <= set(entries) else None

    entries = wait_for(logged, 5, "both requests in the access log")
    assert (entries["log-1"]["uri"], entries["log-1"]["user_agent"]) == (path, agent)
    assert {"time", "method", "status", "request_time"} <= set(entries["log-1"])
    assert (entries["log-2"]["status"], entries["log-2"]["upstream_status"]) == (
        404,
        "",
    )


# After the tests above: it spends /api/'s burst for a while.
def test_rate_limit_is_a_429_problem_with_retry_after(
    proxy: int, project: Path
) -> None:
    """Past /api/'s burst (40 at 20 r/s), nginx answers 429 problems that
    say when to retry, with the security headers (the location adds a
    header of its own, so it must include them again)."""
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda _: exchange(proxy, get("/api/x")), range(100)))
    refused = [answer for answer in answers if answer.status == 429]
    assert refused, [answer.status for answer in answers]
    assert {answer.status for answer in answers} == {200, 429}
    refused[0].problem(429)
    assert refused[0].headers["Retry-After"] == "1"
    assert_security_headers(refused[0], project)


@pytest.fixture(scope="module")
def tls_proxy(
    project: Path, stand_in: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, int]]:
    """nginx-tls.conf as shipped, with a throwaway certificate, in front of
    the stand-in; yields its plain HTTP and HTTPS ports."""
    nginx = require_nginx()
    prefix = tmp_path_factory.mktemp("nginx-tls")
    certificate, key = self_signed(prefix)
    http_port, https_port = free_port(), free_port()
    conf = render_for_prefix(
        project,
        prefix,
        http_port,
        stand_in,
        nginx,
        main=TLS_CONF,
        swaps={
            TLS_LISTEN: f"listen 127.0.0.1:{https_port} ssl;",
            CERTIFICATE: f"ssl_certificate {certificate};",
            CERTIFICATE_KEY: f"ssl_certificate_key {key};",
        },
    )
    with running_nginx(nginx, conf, prefix, https_port):
        yield http_port, https_port


HSTS = "max-age=31536000; includeSubDomains"


def test_tls_config_serves_https_with_hsts(
    tls_proxy: tuple[int, int], project: Path
) -> None:
    """Over HTTPS the app's answers and nginx's own errors carry HSTS and
    the security headers; the app learns the scheme was https."""
    _, https_port = tls_proxy
    answer = exchange(https_port, get("/app/404"), tls=True)
    assert answer.problem(404)["detail"] == APP_DETAIL
    assert answer.headers.get_all("Strict-Transport-Security") == [HSTS]
    assert_security_headers(answer, project)
    for case in ("bad escape in the path", "URI over 4 KiB", "upstream hangs up"):
        request, status = NGINX_ERRORS[case]
        refused = exchange(https_port, request, tls=True)
        assert refused.problem(status)["detail"] != APP_DETAIL, case
        assert refused.headers.get_all("Strict-Transport-Security") == [HSTS], case
        assert_security_headers(refused, project)
    # Plain HTTP on the HTTPS port.
    plain = exchange(https_port, get("/app/404"))
    assert "HTTPS port" in plain.problem(400)["detail"]


def test_tls_config_redirects_plain_http(
    tls_proxy: tuple[int, int], project: Path
) -> None:
    """Plain HTTP is a permanent redirect to the same URL over HTTPS, keeping
    method and body (308), without HSTS (browsers ignore it over HTTP);
    nginx's errors there are problems too."""
    http_port, _ = tls_proxy
    for method in ("GET", "POST"):
        request = get("/api/events?limit=1").replace(b"GET", method.encode(), 1)
        answer = exchange(http_port, request)
        assert answer.status == 308, (method, answer.status, answer.body[:300])
        assert answer.headers["Location"] == "https://127.0.0.1/api/events?limit=1"
        assert "Strict-Transport-Security" not in answer.headers
        assert_security_headers(answer, project)
    request, status = NGINX_ERRORS["bad escape in the path"]
    refused = exchange(http_port, request)
    refused.problem(status)
    assert_security_headers(refused, project)
