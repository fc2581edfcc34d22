"""What the real-client tests share: a console set up as docker-compose.yml runs it (migrate,
an API key, gunicorn and a Celery worker on PostgreSQL and Redis), and two free ports."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.deploy.test_compose import service_command
from tests.processes import (
    Process,
    free_port,
    resolve,
    run,
    wait_for_healthz,
    with_option,
)


def console_prepare(env: dict[str, str], *, scopes: str = "read") -> str:
    """Migrate the console's database and create an API key with `scopes`; the key."""
    migrate = run(resolve(service_command("migrate")), env)
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    created = run(
        [sys.executable, "manage.py", "create_api_key", "--name", "ci", "--scopes", scopes], env
    )
    assert created.returncode == 0, created.stdout + created.stderr
    return created.stdout.strip().splitlines()[-1]


def two_ports() -> tuple[int, int]:
    """Free ports for the console and the app, different from each other."""
    console_port, app_port = free_port(), free_port()
    while app_port == console_port:
        app_port = free_port()
    return console_port, app_port


def console_start(
    *, port: int, env: dict[str, str], tmp_path: Path, processes: list[Process]
) -> Process:
    """Start the web server and a worker (appended to `processes`, for the caller to stop),
    and wait until the health check says both the database and the broker answer. The web
    process."""
    web = Process(
        "web",
        with_option(resolve(service_command("web")), "--bind", f"127.0.0.1:{port}"),
        env,
        tmp_path,
    )
    processes.append(web)
    processes.append(Process("worker", resolve(service_command("worker")), env, tmp_path))
    status, health = wait_for_healthz(f"http://127.0.0.1:{port}/healthz", web)
    assert (status, health["status"]) == (200, "ok"), health
    return web
