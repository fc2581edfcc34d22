"""The commands of docker-compose.yml, run as compose would run them, without Docker.

migrate, then gunicorn, the Celery worker and Celery beat as subprocesses, against a fresh
PostgreSQL database and a Redis database of their own, with production settings (only
plain HTTP allowed, as no TLS proxy is in front).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from psycopg import sql

from tests.deploy.test_compose import (
    REPO_ROOT,
    healthcheck_test,
    service,
    service_command,
    subprocess_environ,
)

pytestmark = pytest.mark.integration

BIN_DIR = Path(sys.executable).parent
POSTGRES_SERVER = "postgres://postgres@127.0.0.1:5432"
# This test empties Redis database 9 before and after it runs; nothing else may use it.
REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 9
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


def resolve(argv: list[str]) -> list[str]:
    """Run the compose command's program from this virtualenv, as the image runs its own."""
    program = sys.executable if argv[0] == "python" else str(BIN_DIR / argv[0])
    assert Path(program).exists(), f"{argv[0]} is not installed in {BIN_DIR}"
    return [program, *argv[1:]]


def with_option(argv: list[str], option: str, value: str) -> list[str]:
    """argv with the value of `option` (`--opt value` or `--opt=value`) replaced."""
    for index, argument in enumerate(argv):
        if argument == option:
            return [*argv[: index + 1], value, *argv[index + 2 :]]
        if argument.startswith(f"{option}="):
            return [*argv[:index], f"{option}={value}", *argv[index + 1 :]]
    raise AssertionError(f"{option} not in {argv}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_admin() -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(f"{POSTGRES_SERVER}/postgres", connect_timeout=3, autocommit=True)


@dataclass
class Process:
    """A long-running subprocess in its own process group, its output kept in files."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_dir: Path
    popen: subprocess.Popen[bytes] = field(init=False)

    def __post_init__(self) -> None:
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=REPO_ROOT,
                env=self.env,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    @property
    def stdout_path(self) -> Path:
        return self.log_dir / f"{self.name}.out"

    @property
    def stderr_path(self) -> Path:
        return self.log_dir / f"{self.name}.err"

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(
            errors="replace"
        )

    def describe(self) -> str:
        return f"--- {self.name}: {' '.join(self.argv)}\n{self.output()[-4000:]}"

    def assert_running(self) -> None:
        assert self.popen.poll() is None, f"{self.name} exited early\n{self.describe()}"

    def stop(self) -> int | None:
        """SIGTERM, as `docker compose stop` sends; SIGKILL the group if it does not exit."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.popen.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            code = None
        # Whatever is left of the group (a pool child, a gunicorn worker) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        if code is None:
            self.popen.wait(timeout=STOP_TIMEOUT)
        return code


@pytest.fixture
def database_name() -> Iterator[str]:
    try:
        admin = postgres_admin()
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_SERVER}: {exc}")
    name = f"asm_prod_{secrets.token_hex(6)}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with postgres_admin() as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def broker_url() -> Iterator[str]:
    client = redis.Redis(
        host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_connect_timeout=3, socket_timeout=5
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable on {REDIS_HOST}:{REDIS_PORT}: {exc}")
    client.flushdb()
    try:
        yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def production_env(broker_url: str, database_name: str, tmp_path: Path) -> dict[str, str]:
    """The environment compose gives the app containers, pointed at this machine."""
    runtime_dir = tmp_path / "run"
    runtime_dir.mkdir()
    env = subprocess_environ(
        {
            "DATABASE_URL": f"{POSTGRES_SERVER}/{database_name}",
            "CELERY_BROKER_URL": broker_url,
            "SECRET_KEY": secrets.token_urlsafe(48),  # 64 characters
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "ASM_HTTPS": "false",
            "ASM_DATA_DIR": str(tmp_path / "data"),
            # As in the image: the code comes from the source tree whatever the working directory.
            "PYTHONPATH": str(REPO_ROOT),
            "PYTHONUNBUFFERED": "1",
            # gunicorn's control socket goes here, not into a home directory shared with others.
            "XDG_RUNTIME_DIR": str(runtime_dir),
        }
    )
    # Everything compose sets explicitly is overridden here with a local equivalent.
    assert set(service("web")["environment"]) <= set(env)
    return env


def run(
    argv: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def wait_for_healthz(url: str, web: Process) -> tuple[int, dict[str, Any]]:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last_error = ""
    while time.monotonic() < deadline:
        web.assert_running()
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            last_error = f"{exc.code} {exc.read()[:500]!r}"
        except OSError as exc:
            last_error = repr(exc)
        time.sleep(0.3)
    raise AssertionError(f"{url} never answered 200: {last_error}\n{web.describe()}")


def run_shell_healthcheck(name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A service's CMD-SHELL health check, run as the container would run it."""
    kind, command = healthcheck_test(name)
    assert kind == "CMD-SHELL"
    container_env = {
        **env,
        # Docker sets HOSTNAME to the container's hostname, which the node names are made of.
        "HOSTNAME": socket.gethostname(),
        "PATH": f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}",
    }
    # `$$` is compose's escape for a literal `$`.
    return run(["/bin/sh", "-c", command.replace("$$", "$")], container_env, timeout=30)


def session_keys(database_url: str) -> set[str]:
    with psycopg.connect(database_url, connect_timeout=5) as connection:
        rows = connection.execute("SELECT session_key FROM django_session").fetchall()
    return {str(row[0]) for row in rows}


def test_compose_commands_serve_queue_and_schedule_in_production_shape(
    production_env: dict[str, str], tmp_path: Path
) -> None:
    env = production_env
    database_url = env["DATABASE_URL"]

    migrate = run(resolve(service_command("migrate")), env)
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    assert "Applying accounts.0001_initial... OK" in migrate.stdout

    # Rows for the worker to prove itself on: the prune task deletes only the expired one.
    with psycopg.connect(database_url, connect_timeout=5) as connection:
        connection.execute(
            "INSERT INTO django_session (session_key, session_data, expire_date) VALUES "
            "('expiredsession0000000000000000000000000', '', now() - interval '1 day'), "
            "('livesession000000000000000000000000000', '', now() + interval '1 day')"
        )

    port = free_port()
    schedule = tmp_path / "celerybeat-schedule"
    processes: list[Process] = []
    try:
        web = Process(
            "web",
            with_option(resolve(service_command("web")), "--bind", f"127.0.0.1:{port}"),
            env,
            tmp_path,
        )
        processes.append(web)
        worker = Process("worker", resolve(service_command("worker")), env, tmp_path)
        processes.append(worker)
        beat = Process(
            "beat",
            with_option(resolve(service_command("beat")), "--schedule", str(schedule)),
            env,
            tmp_path,
        )
        processes.append(beat)

        status, body = wait_for_healthz(f"http://127.0.0.1:{port}/healthz", web)
        assert status == 200
        assert body["status"] == "ok", body
        assert {"database", "broker"} <= set(body["checks"]), body
        assert set(body["checks"].values()) == {"ok"}, body

        # The web container's own health check, pointed at this port, passes.
        probe = healthcheck_test("web")[1:]
        assert probe[0] == "python"
        probe_code = probe[-1].replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        assert probe_code != probe[-1]
        healthy = run([sys.executable, *probe[1:-1], probe_code], env, timeout=30)
        assert healthy.returncode == 0, healthy.stderr

        # Enqueue through the broker from another process; only the worker can run it.
        celery = str(BIN_DIR / "celery")
        enqueued = run(
            [celery, "-A", "asm_console", "call", "accounts.tasks.prune_auth_records"], env
        )
        assert enqueued.returncode == 0, enqueued.stdout + enqueued.stderr
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while "expiredsession0000000000000000000000000" in session_keys(database_url):
            worker.assert_running()
            assert time.monotonic() < deadline, f"the task never ran\n{worker.describe()}"
            time.sleep(0.3)
        assert session_keys(database_url) == {"livesession000000000000000000000000000"}
        assert re.search(
            r"Task accounts\.tasks\.prune_auth_records\[[0-9a-f-]+\] succeeded", worker.output()
        ), worker.describe()

        # The worker's and beat's container health checks find their own nodes.
        for name in ("worker", "beat"):
            pinged = run_shell_healthcheck(name, env)
            assert pinged.returncode == 0, f"{name}: {pinged.stdout}{pinged.stderr}"

        # Beat is up with its schedule where the command put it.
        beat.assert_running()
        assert "beat: Starting..." in beat.output()
        assert list(tmp_path.glob("celerybeat-schedule*")), beat.describe()

        # Gunicorn writes its access log to stdout.
        assert "GET /healthz" in web.stdout_path.read_text()

        # `docker compose stop` sends SIGTERM: every process shuts down cleanly.
        for process in reversed(processes):
            process.assert_running()
            assert process.stop() == 0, process.describe()

        # Without the web server the same probe fails, so it can tell.
        unhealthy = run([sys.executable, *probe[1:-1], probe_code], env, timeout=30)
        assert unhealthy.returncode != 0
    finally:
        for process in reversed(processes):
            process.stop()
