"""The getting-started attack simulation against a real ddtrace app raises one "Security
scanner detected" signal for the service within a minute, and running it again updates that
signal rather than raising another.

The console runs as docker-compose.yml runs it (gunicorn, a Celery worker, PostgreSQL, Redis);
the app runs under `ddtrace-run` with ASM on. The simulation is Datadog's documented one:
requests with the user agent `dd-test-scanner-log`, against routes that exist and routes that
do not.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.e2e.ddtrace_console import console_prepare, console_start, two_ports
from tests.e2e.test_ddtrace_client import (
    APP_SOURCE,
    ENV,
    SERVICE,
    STOP_TIMEOUT,
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
)

pytestmark = pytest.mark.integration

# This test empties Redis database 8 before and after it runs; nothing else may use it.
REDIS_DB = 8
SCANNER_USER_AGENT = "dd-test-scanner-log"
SIMULATION_REQUESTS = 200
# Routes of tests/e2e/ddtrace_app.py, and paths a scanner tries that do not exist.
EXISTING_PATHS = ("/", "/products?id=1", "/search?q=kettle")
SIGNAL_TIMEOUT = 60.0
SCANNER_RULE = "security-scanner"

T = TypeVar("T")


@pytest.fixture
def database_url() -> Iterator[str]:
    _require(postgres_problem())
    with fresh_database(prefix="asm_ddtrace_signal") as name:
        yield f"{POSTGRES_SERVER}/{name}"


@pytest.fixture
def broker_url() -> Iterator[str]:
    _require(redis_problem(REDIS_DB))
    with flushed_redis(REDIS_DB) as url:
        yield url


def poll(what: str, check: Callable[[], T | None], *, timeout: float) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} seconds")
        time.sleep(0.5)


def simulate_scan(app_url: str, run_number: int) -> dict[str, int]:
    """Datadog's getting-started simulation: the test scanner's user agent against existing
    routes and paths that do not exist. Returns the count of each status answered."""
    statuses: dict[str, int] = {}
    for i in range(SIMULATION_REQUESTS):
        if i % 2:
            path = EXISTING_PATHS[i % len(EXISTING_PATHS)]
        else:
            path = f"/scan-{run_number}-{i}/admin.php"
        status, _ = http_get(f"{app_url}{path}", {"User-Agent": SCANNER_USER_AGENT})
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return statuses


def test_the_attack_simulation_raises_one_scanner_signal_and_updates_it(
    database_url: str, broker_url: str, tmp_path: Path
) -> None:
    env = production_environ(database_url=database_url, broker_url=broker_url, tmp_path=tmp_path)
    api_key = console_prepare(env)
    console_port, app_port = two_ports()
    console_url, app_url = f"http://127.0.0.1:{console_port}", f"http://127.0.0.1:{app_port}"

    def api_get(path: str) -> Any:
        status, body = http_get(f"{console_url}{path}", {"Authorization": f"Bearer {api_key}"})
        assert status == 200, f"GET {path}: {status} {body[:1000]!r}"
        return json.loads(body)

    def scanner_signals() -> list[dict[str, Any]]:
        found = api_get(f"/api/v1/signals?rule={SCANNER_RULE}&status=open,under_review,archived")
        return [s for s in found["results"] if s["service"] == SERVICE]

    def scanner_requests() -> int:
        page = api_get(
            f"/api/v1/security-events?service={SERVICE}&rule_type=security_scanner"
            "&source=tracer&limit=1"
        )
        return int(page["count"])

    processes: list[Process] = []
    passed = False
    try:
        console_start(port=console_port, env=env, tmp_path=tmp_path, processes=processes)

        app = Process(
            "app",
            [str(BIN_DIR / "ddtrace-run"), sys.executable, str(APP_SOURCE), str(app_port)],
            {
                **app_environ(console_url),
                # The tracer drops a payload the agent does not answer within 2 s (the
                # default); on a busy CI machine the console can take longer, and the test
                # counts every request.
                "DD_TRACE_AGENT_TIMEOUT_SECONDS": "30",
            },
            tmp_path,
        )
        processes.append(app)
        wait_for_app(app_url, app)

        # The first run: one signal for the service, within a minute of the scan's end.
        statuses = simulate_scan(app_url, 1)
        assert statuses == {"200": 100, "404": 100}, statuses
        scan_ended = time.monotonic()

        def signals_once_all_in() -> list[dict[str, Any]] | None:
            return scanner_signals() if scanner_requests() == SIMULATION_REQUESTS else None

        first = poll(
            "a scanner signal once the scan's traces are in",
            signals_once_all_in,
            timeout=SIGNAL_TIMEOUT,
        )
        assert time.monotonic() - scan_ended <= SIGNAL_TIMEOUT
        assert len(first) == 1, first
        (signal,) = first
        assert signal["title"] == f"Security scanner detected on {SERVICE}", signal
        assert (signal["service"], signal["env"], signal["status"]) == (SERVICE, ENV, "open")
        # It reached real routes (200s), so more than a random scan; no server error.
        assert signal["severity"] == "low", signal
        assert "127.0.0.1" in signal["attackers"]["ips"], signal
        # Every scanner request is counted once (the console's own scanner rule may flag the
        # same requests: a request counts once however many rules matched it).
        poll(
            "the first scan's requests counted on the signal",
            lambda: scanner_signals()[0]["event_count"] >= SIMULATION_REQUESTS,
            timeout=SIGNAL_TIMEOUT,
        )
        first_count = scanner_signals()[0]["event_count"]
        first_last_seen = scanner_signals()[0]["last_seen"]

        # The second run updates the same signal.
        simulate_scan(app_url, 2)
        counts: list[int] = []

        def second_scan_in() -> bool:
            counts.append(scanner_requests())
            return counts[-1] == 2 * SIMULATION_REQUESTS

        try:
            poll("the second scan's traces", second_scan_in, timeout=SIGNAL_TIMEOUT)
        except AssertionError:
            raise AssertionError(f"scanner requests seen: {counts[-5:]}") from None
        updated = poll(
            "the signal updated by the second scan",
            lambda: [s for s in scanner_signals() if s["event_count"] >= 2 * first_count],
            timeout=SIGNAL_TIMEOUT,
        )
        assert [s["id"] for s in scanner_signals()] == [signal["id"]], scanner_signals()
        assert updated[0]["last_seen"] > first_last_seen, updated
        passed = True
    finally:
        for process in reversed(processes):
            process.stop(timeout=STOP_TIMEOUT)
        if not passed:
            for process in processes:
                print(process.describe(tail=8000))
