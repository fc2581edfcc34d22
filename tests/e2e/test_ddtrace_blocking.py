"""A real Datadog tracer blocks what the console's denylist names, and the console shows it.

As test_ddtrace_client.py: the console's production processes (gunicorn, a Celery worker) on a
fresh PostgreSQL database, and the Flask app of ddtrace_app.py under `ddtrace-run` with
Application Security on, this time with remote configuration on and polled often. An IP put on
the denylist is answered 403 by the app once its tracer has polled `/v0.7/config`; those
requests reach the console as blocked security events; taken off the list, the IP gets through
again.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
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
    agent_requests,
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

# This test empties Redis database 12 before and after it runs; nothing else may use it.
REDIS_DB = 12
# The tracer polls the console this often; the default is 5 seconds.
POLL_INTERVAL = 0.2
# Generous bounds on what normally takes a few poll intervals (blocking) or a few seconds
# (the traces of blocked requests reaching the console).
BLOCKING_TIMEOUT = 30.0
EVENTS_TIMEOUT = 60.0
BLOCKED_IP = "198.51.100.66"  # a documentation address, which ddtrace counts as public
OTHER_IP = "198.51.100.67"
BLOCKED_REQUESTS = (
    ("/products?id=1", "application/json"),
    ("/search?q=kettle", "text/html"),
    ("/", "*/*"),
)
USER_AGENT = "shop-e2e-client/1.0"

T = TypeVar("T")


@pytest.fixture
def database_url() -> Iterator[str]:
    _require(postgres_problem())
    with fresh_database(prefix="asm_ddtrace_block") as name:
        yield f"{POSTGRES_SERVER}/{name}"


@pytest.fixture
def broker_url() -> Iterator[str]:
    _require(redis_problem(REDIS_DB))
    with flushed_redis(REDIS_DB) as url:
        yield url


def poll(what: str, check: Callable[[], T | None], *, timeout: float, every: float) -> T:
    """The first truthy result of `check`, tried until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} seconds")
        time.sleep(every)


def get_from(app_url: str, path: str, ip: str, accept: str = "*/*") -> tuple[int, bytes]:
    return http_get(
        f"{app_url}{path}",
        {"User-Agent": USER_AGENT, "X-Forwarded-For": ip, "Accept": accept},
    )


def test_ddtrace_blocks_a_denylisted_ip_and_the_console_shows_it(
    database_url: str, broker_url: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    timings: dict[str, float] = {}

    def reached(phase: str) -> None:
        timings[phase] = round(time.monotonic() - started, 1)

    env = production_environ(database_url=database_url, broker_url=broker_url, tmp_path=tmp_path)
    api_key = console_prepare(env, scopes="read,write")
    reached("migrated")

    console_port, app_port = two_ports()
    console_url, app_url = f"http://127.0.0.1:{console_port}", f"http://127.0.0.1:{app_port}"

    def api_get(path: str) -> Any:
        status, body = http_get(f"{console_url}{path}", {"Authorization": f"Bearer {api_key}"})
        assert status == 200, f"GET {path}: {status} {body[:1000]!r}"
        return json.loads(body)

    def api_send(method: str, path: str, document: Any = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"{console_url}{path}",
            data=None if document is None else json.dumps(document).encode(),
            method=method,
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                body = response.read()
                return response.status, json.loads(body) if body else None
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    processes: list[Process] = []
    passed = False
    try:
        web = console_start(port=console_port, env=env, tmp_path=tmp_path, processes=processes)
        reached("console up")

        app = Process(
            "app",
            [str(BIN_DIR / "ddtrace-run"), sys.executable, str(APP_SOURCE), str(app_port)],
            {
                **app_environ(console_url),
                "DD_REMOTE_CONFIGURATION_ENABLED": "true",
                "DD_REMOTE_CONFIG_POLL_INTERVAL_SECONDS": str(POLL_INTERVAL),
            },
            tmp_path,
        )
        processes.append(app)
        wait_for_app(app_url, app)
        reached("app up")

        # Not blocked before it is on the list; the tracer is polling all along.
        assert get_from(app_url, "/", BLOCKED_IP)[0] == 200
        poll(
            "the tracer polls /v0.7/config",
            lambda: ("POST", "/v0.7/config", 200) in agent_requests(web),
            timeout=BLOCKING_TIMEOUT,
            every=POLL_INTERVAL,
        )

        # Through the denylist API, as a security engineer's script would.
        status, entry = api_send(
            "POST", "/api/v1/denylist", {"kind": "ip", "value": BLOCKED_IP, "reason": "e2e"}
        )
        assert status == 201, (status, entry)
        reached("denylisted")

        def blocked() -> bool:
            status, _ = get_from(app_url, "/", BLOCKED_IP)
            assert status in (200, 403), status
            return status == 403

        poll("the app blocks the IP", blocked, timeout=BLOCKING_TIMEOUT, every=POLL_INTERVAL)
        reached("blocking")
        # The first 403 above, then one request per path and kind of answer.
        blocked_sent = 1
        for path, accept in BLOCKED_REQUESTS:
            status, body = get_from(app_url, path, BLOCKED_IP, accept)
            assert status == 403, (path, status, body)
            blocked_sent += 1
            if accept == "application/json":
                assert b"blocked" in body.lower(), body
        # Only that IP: another client of the same app is served.
        assert get_from(app_url, "/products?id=1", OTHER_IP)[0] == 200

        # The console shows each blocked request as a blocked event from that IP.
        events_path = f"/api/v1/security-events?service={SERVICE}&client_ip={BLOCKED_IP}&limit=500"

        def blocked_events() -> list[dict[str, Any]] | None:
            for process in processes:
                process.assert_running()
            found = [e for e in api_get(events_path)["results"] if e["blocked"]]
            return found if len(found) >= blocked_sent else None

        events = poll(
            "the blocked requests reach the console",
            blocked_events,
            timeout=EVENTS_TIMEOUT,
            every=0.5,
        )
        reached("events")
        assert len(events) == blocked_sent, events
        assert len({(e["trace_id"], e["span_id"]) for e in events}) == blocked_sent, events
        for event in events:
            assert event["client_ip"] == BLOCKED_IP, event
            assert event["rule_id"] == "blk-001-001", event
            assert event["status_code"] == 403, event
            assert (event["service"], event["env"], event["source"]) == (SERVICE, ENV, "tracer")
        assert {e["url"].removeprefix(app_url) for e in events} == {"/"} | {
            path for path, _ in BLOCKED_REQUESTS
        }, events

        # Off the list, the IP gets through again: the console stops serving the file and the
        # tracer drops it from its WAF.
        status, _ = api_send("DELETE", f"/api/v1/denylist/{entry['id']}")
        assert status == 204, status
        poll(
            "the app unblocks the IP",
            lambda: get_from(app_url, "/", BLOCKED_IP)[0] == 200,
            timeout=BLOCKING_TIMEOUT,
            every=POLL_INTERVAL,
        )
        reached("unblocked")

        # Every poll of the tracer was answered 200.
        polls = [r for r in agent_requests(web) if r[1] == "/v0.7/config"]
        assert polls, agent_requests(web)
        assert all(status == 200 for _, _, status in polls), polls
        assert "Traceback" not in web.output(), web.describe()
        passed = True
    finally:
        for process in reversed(processes):
            process.stop(timeout=STOP_TIMEOUT)
        reached("stopped")
        print(f"timings, seconds since the start: {timings}")
        if not passed:
            for process in processes:
                print(process.describe(tail=8000))
