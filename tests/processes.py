"""Running the console's production processes in tests: the commands of docker-compose.yml as
subprocesses, against a fresh PostgreSQL database and a Redis database of their own.

Shared by tests/deploy/test_production_processes.py and tests/e2e/test_ddtrace_client.py.
"""

from __future__ import annotations

import contextlib
import json
import os
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
import redis
from psycopg import sql

from tests.deploy.test_compose import REPO_ROOT, subprocess_environ

BIN_DIR = Path(sys.executable).parent
POSTGRES_SERVER = "postgres://postgres@127.0.0.1:5432"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
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


def postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used here, or None when it can."""
    try:
        with postgres_admin():
            pass
    except psycopg.OperationalError as exc:
        return f"PostgreSQL is not reachable at {POSTGRES_SERVER}: {exc}"
    return None


@contextlib.contextmanager
def fresh_database(*, prefix: str) -> Iterator[str]:
    """A new, empty database named `<prefix>_<random>`, dropped afterwards even if a process
    still holds connections to it."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    with postgres_admin() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with postgres_admin() as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _redis_client(db: int) -> redis.Redis:
    return redis.Redis(
        host=REDIS_HOST, port=REDIS_PORT, db=db, socket_connect_timeout=3, socket_timeout=5
    )


def redis_problem(db: int) -> str | None:
    """Why Redis database `db` cannot be used here, or None when it can."""
    client = _redis_client(db)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"Redis is not reachable on {REDIS_HOST}:{REDIS_PORT}: {exc}"
    finally:
        client.close()
    return None


@contextlib.contextmanager
def flushed_redis(db: int) -> Iterator[str]:
    """The URL of Redis database `db`, emptied before and after. The caller owns that number:
    no other test may use it."""
    client = _redis_client(db)
    client.flushdb()
    try:
        yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"
    finally:
        client.flushdb()
        client.close()


def production_environ(*, database_url: str, broker_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment compose gives the app containers, pointed at this machine, with
    production settings (only plain HTTP allowed, as no TLS proxy is in front)."""
    runtime_dir = tmp_path / "run"
    runtime_dir.mkdir()
    return subprocess_environ(
        {
            "DATABASE_URL": database_url,
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

    def describe(self, tail: int = 4000) -> str:
        return f"--- {self.name}: {' '.join(self.argv)}\n{self.output()[-tail:]}"

    def assert_running(self) -> None:
        assert self.popen.poll() is None, f"{self.name} exited early\n{self.describe()}"

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, as `docker compose stop` sends; SIGKILL the group if it does not exit."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        # Whatever is left of the group (a pool child, a gunicorn worker) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        if code is None:
            self.popen.wait(timeout=timeout)
        return code


def run(
    argv: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def wait_for_healthz(
    url: str, web: Process, timeout: float = STARTUP_TIMEOUT
) -> tuple[int, dict[str, Any]]:
    deadline = time.monotonic() + timeout
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
