"""A real Datadog tracer reports the libraries a service loaded, and the console lists a
known-vulnerable one as a vulnerability of that service.

The console runs as in production (migrate, gunicorn, a Celery worker, PostgreSQL, Redis). An
advisory fixture for `requests` (PYSEC-2023-74, affected from 2.3.0 until 2.31.0) is imported
first. The app of test_ddtrace_client.py runs under `ddtrace-run` with `requests==2.30.0`
installed for it alone (`pip install --target` into a temporary folder on its PYTHONPATH, so the
project's pinned environment is untouched) and imported before the app starts. Its telemetry
(`app-dependencies-loaded`) brings the dependency; the worker stores it and matching, enqueued
on commit, creates the vulnerability, which the test reads through the REST API.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.e2e.ddtrace_console import console_prepare, console_start, two_ports
from tests.e2e.test_ddtrace_client import (
    APP_SOURCE,
    NORMAL_USER_AGENT,
    STOP_TIMEOUT,
    Console,
    _require,
    app_environ,
    http_get,
    wait_for_app,
)
from tests.processes import (
    BIN_DIR,
    POSTGRES_SERVER,
    Process,
    flushed_redis,
    fresh_database,
    postgres_problem,
    production_environ,
    redis_problem,
    run,
)

pytestmark = pytest.mark.integration

# This test empties Redis database 13 before and after it runs; nothing else may use it.
REDIS_DB = 13
SERVICE, ENV = "shop-deps", "ci"
VULNERABLE = ("requests", "2.30.0")
ADVISORY = Path(__file__).parents[1] / "fixtures" / "osv" / "PYSEC-2023-74.json"
MATCH_TIMEOUT = 60.0


@pytest.fixture
def database_url() -> Iterator[str]:
    _require(postgres_problem())
    with fresh_database(prefix="asm_ddtrace_vulns") as name:
        yield f"{POSTGRES_SERVER}/{name}"


@pytest.fixture
def broker_url() -> Iterator[str]:
    _require(redis_problem(REDIS_DB))
    with flushed_redis(REDIS_DB) as url:
        yield url


@pytest.fixture
def app_site(tmp_path: Path) -> Path:
    """`requests==2.30.0` and its dependencies in a folder of their own, for the app only."""
    target = tmp_path / "app-site"
    name, version = VULNERABLE
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
            str(target),
            f"{name}=={version}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        _require(f"cannot install {name}=={version} for the app: {result.stderr[-2000:]}")
    return target


def test_ddtrace_dependencies_become_vulnerabilities(
    database_url: str, broker_url: str, app_site: Path, tmp_path: Path
) -> None:
    env = production_environ(database_url=database_url, broker_url=broker_url, tmp_path=tmp_path)
    api_key = console_prepare(env)
    imported = run([sys.executable, "manage.py", "import_advisories", str(ADVISORY)], env)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert "1 created" in imported.stdout, imported.stdout

    console_port, app_port = two_ports()
    console_url, app_url = f"http://127.0.0.1:{console_port}", f"http://127.0.0.1:{app_port}"
    console = Console(console_url, api_key, database_url)

    # The app imports the vulnerable library, then runs as test_ddtrace_client.py's app does.
    wrapper = tmp_path / "app_with_requests.py"
    wrapper.write_text(
        "import runpy\nimport requests  # noqa: F401\n"
        f"runpy.run_path({str(APP_SOURCE)!r}, run_name='__main__')\n"
    )
    app_env = app_environ(console_url)
    app_env["DD_SERVICE"], app_env["DD_ENV"] = SERVICE, ENV
    app_env["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(app_site), app_env.get("PYTHONPATH", "")) if part
    )

    processes: list[Process] = []
    found: list[dict[str, Any]] = []
    try:
        # processes: the web server, then the worker.
        console_start(port=console_port, env=env, tmp_path=tmp_path, processes=processes)

        app = Process(
            "app",
            [str(BIN_DIR / "ddtrace-run"), sys.executable, str(wrapper), str(app_port)],
            app_env,
            tmp_path,
        )
        processes.append(app)
        wait_for_app(app_url, app)
        status, _ = http_get(f"{app_url}/", {"User-Agent": NORMAL_USER_AGENT})
        assert status == 200

        deadline = time.monotonic() + MATCH_TIMEOUT
        while time.monotonic() < deadline and not found:
            for process in processes:
                process.assert_running()
            found = console.get(
                f"/api/v1/vulnerabilities?service={SERVICE}&library=requests&status=open"
            )["results"]
            if not found:
                time.sleep(0.5)

        with psycopg.connect(database_url, connect_timeout=5) as connection:
            dependencies: dict[str, str] = dict(
                connection.execute(
                    "SELECT d.name, d.version FROM services_servicedependency d JOIN "
                    "services_service s ON s.id = d.service_id WHERE s.name = %s AND s.env = %s",
                    (SERVICE, ENV),
                ).fetchall()
            )
        # The dependencies arrived through the tracer's telemetry, the vulnerable one included.
        assert dependencies.get("flask"), dependencies
        assert dependencies.get("requests") == VULNERABLE[1], dependencies
        assert len(found) == 1, (found, dependencies, processes[1].describe())
        vulnerability = found[0]
        assert (vulnerability["library"], vulnerability["version"]) == VULNERABLE, vulnerability
        assert vulnerability["env"] == ENV, vulnerability
        advisory = vulnerability["advisory"]
        assert isinstance(advisory, dict)
        assert advisory["id"] == "PYSEC-2023-74", vulnerability
        assert "CVE-2023-32681" in advisory["aliases"], vulnerability
        assert vulnerability["fixed_versions"] == ["2.31.0"], vulnerability
        assert vulnerability["base_severity"] == "medium", vulnerability
        # Outside production ("ci"), one step lower.
        assert vulnerability["severity"] == "low", vulnerability
        assert "not_production" in vulnerability["severity_reasons"], vulnerability
    finally:
        for process in reversed(processes):
            process.stop(timeout=STOP_TIMEOUT)
