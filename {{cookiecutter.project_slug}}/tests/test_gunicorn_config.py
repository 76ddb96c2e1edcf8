"""deploy/gunicorn.conf.py, the config production runs.

Every value is set by a ``GUNICORN_`` variable; combinations that would run
badly (gevent on SQLite, threads on sync workers, a misspelt variable) are
refused; and a real gunicorn started with the file serves, writes its own
messages as JSON lines and no access log (nginx writes that one). The code
the file uses is tested in test_serving.py.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from types import ModuleType

import pytest

from support import free_port, process_group, wait_for

PROJECT_DIR = Path(__file__).resolve().parent.parent
CONFIG_PATH = PROJECT_DIR / "deploy" / "gunicorn.conf.py"
PACKAGE = "{{ cookiecutter.package_name }}"
WSGI_APP = f"{PACKAGE}.wsgi:app"

LoadConfig = Callable[..., ModuleType]


@pytest.fixture(autouse=True)
def no_gunicorn_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's shell may export GUNICORN_ settings; start from none."""
    for name in list(os.environ):
        if name.startswith("GUNICORN_"):
            monkeypatch.delenv(name)


@pytest.fixture
def load_config(monkeypatch: pytest.MonkeyPatch) -> LoadConfig:
    """``load_config(WORKERS="3", ...)`` runs the config file afresh with
    those ``GUNICORN_`` variables set, as gunicorn would, and returns it."""

    def load(**variables: str) -> ModuleType:
        for name, value in variables.items():
            monkeypatch.setenv(f"GUNICORN_{name}", value)
        spec = importlib.util.spec_from_file_location("gunicorn_conf", CONFIG_PATH)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def config(load_config: LoadConfig) -> ModuleType:
    return load_config()


# Worker count -----------------------------------------------------------------


def test_workers_default_to_the_cpu_limit(config: ModuleType) -> None:
    serving = config.serving
    assert config.workers == serving.default_workers(serving.cpu_limit(), 8)
    assert 1 <= config.workers <= 8


def test_max_workers_caps_and_workers_overrides(load_config: LoadConfig) -> None:
    assert load_config(MAX_WORKERS="1").workers == 1
    assert load_config(WORKERS="13").workers == 13


# Settings from the environment ----------------------------------------------


def test_defaults_suit_nginx_on_the_same_host(config: ModuleType) -> None:
    assert config.bind == ["127.0.0.1:8000"]
    assert config.worker_class == "gthread"
    assert config.threads == 4
    assert (config.timeout, config.graceful_timeout) == (30, 30)
    # Above nginx's upstream keepalive_timeout (60s): nginx closes idle
    # connections first and never reuses one gunicorn is closing.
    assert config.keepalive == 75
    assert (config.max_requests, config.max_requests_jitter) == (10000, 2500)
    assert config.forwarded_allow_ips == "127.0.0.1"
    assert config.secure_scheme_headers == {"X-FORWARDED-PROTO": "https"}
    assert config.preload_app is False
    assert (config.accesslog, config.errorlog) == (None, "-")
    assert config.proc_name == PACKAGE
    assert config.wsgi_app == WSGI_APP
    if Path("/dev/shm").is_dir():  # noqa: S108 - the path the config checks
        assert config.worker_tmp_dir == "/dev/shm"  # noqa: S108


def test_control_socket_is_off_unless_a_path_is_given(
    load_config: LoadConfig, tmp_path: Path
) -> None:
    """Gunicorn would otherwise create ~/.gunicorn/gunicorn.ctl, which a
    container's home may not allow and nothing here uses."""
    config = load_config()
    assert config.control_socket_disable is True
    assert not hasattr(config, "control_socket")

    path = str(tmp_path / "gunicorn.ctl")
    config = load_config(CONTROL_SOCKET=path)
    assert config.control_socket_disable is False
    assert config.control_socket == path


def test_environment_overrides_each_value(
    load_config: LoadConfig, tmp_path: Path
) -> None:
    socket_path = f"unix:{tmp_path / 'app.sock'}"
    config = load_config(
        BIND=f"{socket_path}, 127.0.0.1:9000",
        WORKERS="3",
        THREADS="8",
        TIMEOUT="60",
        GRACEFUL_TIMEOUT="20",
        KEEPALIVE="90",
        MAX_REQUESTS="0",
        PRELOAD_APP="true",
        FORWARDED_ALLOW_IPS="10.0.0.5",
        WORKER_TMP_DIR=str(tmp_path),
        ERROR_LOG="off",
        LOG_LEVEL="WARNING",
        PROC_NAME="api",
    )
    assert config.bind == [socket_path, "127.0.0.1:9000"]
    assert (config.workers, config.threads) == (3, 8)
    assert (config.timeout, config.graceful_timeout, config.keepalive) == (60, 20, 90)
    assert config.max_requests == 0
    assert config.preload_app is True
    assert config.forwarded_allow_ips == "10.0.0.5"
    assert config.worker_tmp_dir == str(tmp_path)
    assert config.errorlog is None
    assert config.loglevel == "warning"
    assert config.proc_name == "api"


@pytest.mark.parametrize("database_url", ["sqlite:///app.db", ""])
def test_gevent_is_refused_without_postgresql(
    load_config: LoadConfig, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    """SQLite's calls hold a gevent worker's loop, and a greenlet waiting
    for its write lock starves the one holding it.{{ " This project runs on SQLite." if cookiecutter.database != "postgresql" else "" }}"""
    monkeypatch.setenv("DATABASE_URL", database_url)
    with pytest.raises(
        RuntimeError, match="GUNICORN_WORKER_CLASS=gevent needs DATABASE_URL"
    ):
        load_config(WORKER_CLASS="gevent")
{%- if cookiecutter.database == "postgresql" %}


def test_gevent_runs_on_postgresql_with_the_loop_monitor(
    load_config: LoadConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """psycopg 3 waits through gevent: nothing to confirm by hand."""
    monkeypatch.setenv("DATABASE_URL", "postgres://user@db.example/app")
    config = load_config(WORKER_CLASS="gevent")
    assert (config.worker_class, config.threads) == ("gevent", 1)
    assert config.env.gevent_max_blocking_seconds == 0.2
    unmonitored = load_config(GEVENT_MAX_BLOCKING_SECONDS="0")
    assert unmonitored.env.gevent_max_blocking_seconds == 0


def test_gevent_is_refused_with_a_preloaded_app(
    load_config: LoadConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The master would import the app before gevent patches anything."""
    monkeypatch.setenv("DATABASE_URL", "postgres://user@db.example/app")
    with pytest.raises(RuntimeError, match="GUNICORN_PRELOAD_APP=1 cannot run with"):
        load_config(WORKER_CLASS="gevent", PRELOAD_APP="1")
    assert load_config(WORKER_CLASS="gthread", PRELOAD_APP="1").preload_app
{%- endif %}


@pytest.mark.parametrize(
    ("name", "advice"),
    [
        ("GEVENT_PATCHED_DB", "cooperates"),
        ("ACCESS_LOG", "nginx writes the access log"),
    ],
)
def test_a_retired_variable_is_refused_with_advice(
    load_config: LoadConfig, name: str, advice: str
) -> None:
    with pytest.raises(
        RuntimeError, match=f"GUNICORN_{name} is no longer read: .*{advice}"
    ):
        load_config(**{name: "1"})


def test_sync_workers_run_one_thread(load_config: LoadConfig) -> None:
    """Gunicorn would quietly turn sync with threads into gthread."""
    assert load_config(WORKER_CLASS="sync").threads == 1
    with pytest.raises(RuntimeError, match="GUNICORN_THREADS"):
        load_config(WORKER_CLASS="sync", THREADS="4")


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"WORKER_CLASS": "eventlet"}, "GUNICORN_WORKER_CLASS"),
        ({"WORKER": "4"}, "GUNICORN_WORKER"),
        ({"WORKERS": "many"}, "GUNICORN_WORKERS"),
        ({"WORKERS": "0"}, "GUNICORN_WORKERS"),
        ({"PRELOAD_APP": "maybe"}, "GUNICORN_PRELOAD_APP"),
        ({"GEVENT_MAX_BLOCKING_SECONDS": "-1"}, "GUNICORN_GEVENT_MAX_BLOCKING"),
        ({"GEVENT_MAX_BLOCKING_SECONDS": "nan"}, "GUNICORN_GEVENT_MAX_BLOCKING"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(
    load_config: LoadConfig, variables: dict[str, str], named: str
) -> None:
    with pytest.raises(RuntimeError, match=named):
        load_config(**variables)


# Real gunicorn ----------------------------------------------------------------


def gunicorn_env(tmp_path: Path, **variables: str) -> dict[str, str]:
    """Testing config, a throwaway SQLite file and a home of its own (to
    prove no control socket lands there)."""
    env = {
        **os.environ,
        "APP_ENV": "testing",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
        "HOME": str(tmp_path / "home"),
        **{f"GUNICORN_{name}": value for name, value in variables.items()},
    }
    env.pop("XDG_RUNTIME_DIR", None)
    return env


def run_python(
    args: list[str], cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """This interpreter with ``args``, its output captured, within a minute."""
    return subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_master_imports_nothing_of_the_app(tmp_path: Path) -> None:
    """Reading the config imports neither the package nor what it uses:
    prometheus_client would pick its storage before the metrics directory
    is set, and a driver imported before a gevent worker patches the
    standard library would not cooperate."""
    watched = (PACKAGE, "flask", "prometheus_client", "sqlalchemy", "psycopg")
    code = (
        "import runpy, sys; "
        f"runpy.run_path({str(CONFIG_PATH)!r}); "
        "loaded = set(name.split('.')[0] for name in sys.modules); "
        f"print(sorted(loaded & set({watched!r})))"
    )
    result = run_python(["-c", code], tmp_path, gunicorn_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


def test_check_config_accepts_the_shipped_file(tmp_path: Path) -> None:
    command = ["-m", "gunicorn", "--check-config", "-c", str(CONFIG_PATH), WSGI_APP]
    result = run_python(command, PROJECT_DIR, gunicorn_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


def get(port: int, path: str, headers: dict[str, str] | None = None) -> int | None:
    """Status of ``GET path``, or None while nothing listens yet."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path, headers=headers or {})
        return connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def running_gunicorn(
    env: dict[str, str], stdout: Path, stderr: Path
) -> AbstractContextManager[subprocess.Popen[bytes]]:
    """gunicorn with the shipped config; stopped with SIGTERM on exit, as a
    process manager stops it."""
    command = [sys.executable, "-m", "gunicorn", "-c", str(CONFIG_PATH), WSGI_APP]
    return process_group(command, env, stdout, stderr, grace=20)


@pytest.mark.parametrize("preload", ["0", "1"], ids=["per-worker", "preloaded"])
def test_gunicorn_serves_and_logs_json_lines_without_an_access_log(
    tmp_path: Path, preload: str
) -> None:
    port = free_port()
    env = gunicorn_env(
        tmp_path,
        BIND=f"127.0.0.1:{port}",
        WORKERS="2",
        GRACEFUL_TIMEOUT="5",
        PRELOAD_APP=preload,
        LOG_LEVEL="debug",  # post_fork reports the pools it reset
    )
    stdout, stderr = tmp_path / "stdout.log", tmp_path / "stderr.log"
    request_id = "gunicorn-test.1:abc"

    with running_gunicorn(env, stdout, stderr) as process:
        wait_for(
            lambda: get(port, "/healthz") or process.poll() is not None,
            timeout=60,
            what="gunicorn to answer",
        )
        assert process.poll() is None, stderr.read_text()
        assert get(port, "/healthz", {"X-Request-ID": request_id}) == 200
    assert process.returncode == 0, stderr.read_text()

    errors = stderr.read_text()
    assert "Traceback" not in errors, errors
    assert not (tmp_path / "home" / ".gunicorn").exists()  # no control socket
    if preload == "1":
        assert errors.count("reset 1 database engine(s)") == 2, errors
    # gunicorn's own messages: JSON lines in the app's format, on stderr.
    messages = [json.loads(line) for line in errors.splitlines() if line.strip()]
    assert {"time", "level", "logger", "message"} <= set(messages[0]), messages[0]
    assert any("Booting worker" in entry["message"] for entry in messages), errors
    # No access log: nginx writes one line per request.
    assert request_id not in stdout.read_text()
