"""The commands of docker-compose.yml, run as compose would run them, without Docker.

migrate, then gunicorn, the Celery worker and Celery beat as subprocesses, against a fresh
PostgreSQL database and a Redis database of their own, with production settings (only
plain HTTP allowed, as no TLS proxy is in front).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.deploy.test_compose import healthcheck_test, service, service_command
from tests.processes import (
    BIN_DIR,
    POSTGRES_SERVER,
    STARTUP_TIMEOUT,
    Process,
    flushed_redis,
    free_port,
    fresh_database,
    postgres_problem,
    production_environ,
    redis_problem,
    resolve,
    run,
    wait_for_healthz,
    with_option,
)

pytestmark = pytest.mark.integration

# This test empties Redis database 9 before and after it runs; nothing else may use it.
REDIS_DB = 9


@pytest.fixture
def database_name() -> Iterator[str]:
    problem = postgres_problem()
    if problem:
        pytest.skip(problem)
    with fresh_database(prefix="asm_prod") as name:
        yield name


@pytest.fixture
def broker_url() -> Iterator[str]:
    problem = redis_problem(REDIS_DB)
    if problem:
        pytest.skip(problem)
    with flushed_redis(REDIS_DB) as url:
        yield url


@pytest.fixture
def production_env(broker_url: str, database_name: str, tmp_path: Path) -> dict[str, str]:
    """The environment compose gives the app containers, pointed at this machine."""
    env = production_environ(
        database_url=f"{POSTGRES_SERVER}/{database_name}", broker_url=broker_url, tmp_path=tmp_path
    )
    # Everything compose sets explicitly is overridden here with a local equivalent.
    assert set(service("web")["environment"]) <= set(env)
    return env


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
