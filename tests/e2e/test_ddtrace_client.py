"""A real Datadog tracer reports attacks to the console, which runs as in production.

The console runs the commands of docker-compose.yml (migrate, gunicorn, a Celery worker) against
a fresh PostgreSQL database and a Redis database of its own. A Flask app (ddtrace_app.py) runs
under `ddtrace-run` with Application Security on and its agent URL pointed at the console. The
test sends the app normal traffic and Datadog's getting-started attack simulation, then reads
what the console made of it through the REST API, as a user would.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
import pytest

from tests.deploy.test_compose import service_command, subprocess_environ
from tests.processes import (
    BIN_DIR,
    POSTGRES_SERVER,
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

# This test empties Redis database 11 before and after it runs; nothing else may use it.
REDIS_DB = 11
APP_SOURCE = Path(__file__).with_name("ddtrace_app.py")
SERVICE, ENV, VERSION = "shop", "ci", "2.0.0"
HTTP_TIMEOUT = 5.0
APP_STARTUP_TIMEOUT = 30.0
# Traces leave the app every 0.5 s and telemetry every second: everything is normally in the
# console a few seconds after the last request.
SETTLE_TIMEOUT = 60.0
# The numbers count as settled once no batch is in flight and they stopped changing for this
# long; longer while they are still short of what was sent, so that a slow flush is waited for.
SETTLED_AFTER, SETTLED_AFTER_IF_SHORT = 1.5, 8.0
# A worker processes a batch within milliseconds of its arrival; one pending for longer than
# this was dropped or skipped.
IN_FLIGHT_SECONDS = 5
# Each process gets this long to exit on SIGTERM before it is killed.
STOP_TIMEOUT = 10.0

SQL_INJECTION = "1' OR 1=1--"
XSS = "<script>alert(1)</script>"
SCANNER_USER_AGENT = "dd-test-scanner-log"  # rule ua0-600-55x, Datadog's test scanner
NORMAL_USER_AGENT = "shop-e2e-client/1.0"
UNKNOWN_PATH = "/no-such-page"


@dataclass(frozen=True)
class Attack:
    rule_type: str
    path: str
    user_agent: str = NORMAL_USER_AGENT
    # A distinct public address for each request whose client IP the test checks.
    forwarded_for: str | None = None
    status: int = 200


ATTACKS = (
    Attack("security_scanner", "/", user_agent=SCANNER_USER_AGENT),
    Attack("security_scanner", UNKNOWN_PATH, user_agent=SCANNER_USER_AGENT, status=404),
    Attack(
        "sql_injection",
        f"/products?{urlencode({'id': SQL_INJECTION}, quote_via=quote)}",
        forwarded_for="203.0.113.11",
    ),
    Attack(
        "sql_injection",
        f"/products?{urlencode({'id': SQL_INJECTION}, quote_via=quote)}",
        forwarded_for="203.0.113.12",
    ),
    Attack(
        "xss", f"/search?{urlencode({'q': XSS}, quote_via=quote)}", forwarded_for="203.0.113.21"
    ),
    Attack(
        "xss", f"/search?{urlencode({'q': XSS}, quote_via=quote)}", forwarded_for="203.0.113.22"
    ),
)
NORMAL_PATHS = ("/", "/products?id=1", "/search?q=kettle")

# The agent protocol, as gunicorn's access log shows each request of the tracer.
_ACCESS_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3}) ')
_AGENT_PATH = re.compile(r"^/(info|v0\.\d+/|telemetry/)")


def _require(problem: str | None) -> None:
    if problem is None:
        return
    if os.environ.get("CI"):
        # CI must never report green while silently running no real-client test.
        pytest.fail(f"{problem} (CI is set, so this fails instead of skipping)")
    pytest.skip(problem)


@pytest.fixture
def database_url() -> Iterator[str]:
    _require(postgres_problem())
    with fresh_database(prefix="asm_ddtrace") as name:
        yield f"{POSTGRES_SERVER}/{name}"


@pytest.fixture
def broker_url() -> Iterator[str]:
    _require(redis_problem(REDIS_DB))
    with flushed_redis(REDIS_DB) as url:
        yield url


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def app_environ(agent_url: str) -> dict[str, str]:
    """What the monitored service runs with: Datadog's documented switches and nothing of the
    console's settings or of any tracer configuration this machine happens to have."""
    inherited = {k: v for k, v in subprocess_environ({}).items() if not k.startswith("DD_")}
    return {
        **inherited,
        "DD_APPSEC_ENABLED": "true",
        "DD_SERVICE": SERVICE,
        "DD_ENV": ENV,
        "DD_VERSION": VERSION,
        "DD_TRACE_AGENT_URL": agent_url,
        "DD_TRACE_WRITER_INTERVAL_SECONDS": "0.5",
        "DD_REMOTE_CONFIGURATION_ENABLED": "false",
        "DD_INSTRUMENTATION_TELEMETRY_ENABLED": "true",
        "DD_TELEMETRY_HEARTBEAT_INTERVAL": "1",
        "DD_TRACE_STARTUP_LOGS": "false",
        "PYTHONUNBUFFERED": "1",
    }


def wait_for_app(base_url: str, app: Process) -> None:
    deadline = time.monotonic() + APP_STARTUP_TIMEOUT
    last_error = ""
    while time.monotonic() < deadline:
        app.assert_running()
        try:
            status, body = http_get(f"{base_url}/", {"User-Agent": NORMAL_USER_AGENT})
        except OSError as exc:
            last_error = repr(exc)
        else:
            if status == 200:
                return
            last_error = f"{status} {body[:200]!r}"
        time.sleep(0.3)
    raise AssertionError(f"the app never answered: {last_error}\n{app.describe()}")


@dataclass
class Snapshot:
    """What the console shows at one moment: its API's answers and, from its database, the
    service's dependencies and the intake batches by state."""

    services: list[dict[str, Any]]
    events: list[dict[str, Any]]
    dependencies: set[str]
    batches: dict[str, int]
    failed_batches: list[tuple[int, str, str]]
    pending_batches: list[tuple[int, str, str]]
    # Pending batches that arrived in the last few seconds: a worker may still be on them.
    batches_in_flight: int

    def service(self) -> dict[str, Any] | None:
        found = [s for s in self.services if s["name"] == SERVICE and s["env"] == ENV]
        assert len(found) <= 1, self.services
        return found[0] if found else None

    def requests_by_type(self) -> dict[str, set[str]]:
        """Rule type -> the ids of the requests (entry spans) it matched on."""
        found: dict[str, set[str]] = {}
        for event in self.events:
            found.setdefault(event["rule_type"], set()).add(
                f"{event['trace_id']}/{event['span_id']}"
            )
        return found

    def complete(self, attacks_sent: int) -> bool:
        """Everything sent has arrived (maybe more, which the assertions then report)."""
        service = self.service()
        by_type = self.requests_by_type()
        return (
            service is not None
            and service["suspicious_requests"] >= attacks_sent
            and all(
                len(by_type.get(rule_type, ())) >= sum(a.rule_type == rule_type for a in ATTACKS)
                for rule_type in {a.rule_type for a in ATTACKS}
            )
            and "flask" in self.dependencies
        )

    def fingerprint(self) -> str:
        return json.dumps(
            [
                sorted((s["name"], s["env"], s["suspicious_requests"]) for s in self.services),
                sorted(event["id"] for event in self.events),
                sorted(self.dependencies),
            ]
        )

    def describe(self) -> str:
        return json.dumps(
            {
                "services": self.services,
                "events": [
                    {
                        k: e.get(k)
                        for k in ("rule_id", "rule_type", "client_ip", "url", "status_code")
                    }
                    | {"request": f"{e['trace_id']}/{e['span_id']}"}
                    for e in self.events
                ],
                "dependencies": sorted(self.dependencies),
                "batches": self.batches,
                "failed_batches": self.failed_batches,
                "pending_batches": self.pending_batches,
            },
            indent=1,
            default=str,
        )[-6000:]


class Console:
    """The console's REST API with a read key, and its database."""

    def __init__(self, base_url: str, api_key: str, database_url: str) -> None:
        self.base_url, self.api_key, self.database_url = base_url, api_key, database_url

    def get(self, path: str) -> Any:
        status, body = http_get(
            f"{self.base_url}{path}", {"Authorization": f"Bearer {self.api_key}"}
        )
        assert status == 200, f"GET {path}: {status} {body[:1000]!r}"
        return json.loads(body)

    def snapshot(self) -> Snapshot:
        services = self.get("/api/v1/services?window=24h&limit=500")
        # The tracer's own findings; the console's detection is checked on its own below.
        events = self.get(f"/api/v1/security-events?service={SERVICE}&source=tracer&limit=500")
        assert services["next"] is None, "more than one page of services"
        assert events["next"] is None, "more than one page of events"
        # The test owns this database, so it may look at what the API does not show.
        with psycopg.connect(self.database_url, connect_timeout=5) as connection:
            dependencies = connection.execute(
                "SELECT d.name FROM services_servicedependency d "
                "JOIN services_service s ON s.id = d.service_id WHERE s.name = %s AND s.env = %s",
                (SERVICE, ENV),
            ).fetchall()
            batches = connection.execute(
                "SELECT state, count(*) FROM traces_intakebatch GROUP BY state"
            ).fetchall()
            failed = connection.execute(
                "SELECT id, kind, error FROM traces_intakebatch WHERE state = 'failed'"
            ).fetchall()
            in_flight = connection.execute(
                "SELECT count(*) FROM traces_intakebatch WHERE state = 'pending' "
                "AND received_at > now() - make_interval(secs => %s)",
                (IN_FLIGHT_SECONDS,),
            ).fetchone()
            pending = connection.execute(
                "SELECT id, kind, concat('received ', received_at, ', enqueued ', enqueued_at, "
                "', attempts ', attempts) FROM traces_intakebatch WHERE state = 'pending' "
                "ORDER BY id"
            ).fetchall()
        return Snapshot(
            services=services["results"],
            events=events["results"],
            dependencies={str(row[0]) for row in dependencies},
            batches={str(state): int(count) for state, count in batches},
            failed_batches=[(int(i), str(kind), str(error)) for i, kind, error in failed],
            pending_batches=[(int(i), str(kind), str(when)) for i, kind, when in pending],
            batches_in_flight=int(in_flight[0]) if in_flight else 0,
        )

    def wait_until_settled(self, attacks_sent: int, processes: list[Process]) -> Snapshot:
        """Poll until no batch is in flight and the numbers stop changing; the last snapshot
        when they never do. A batch left pending longer than a worker needs is not waited for:
        the assertions report it."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        current = self.snapshot()
        stable_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            for process in processes:
                process.assert_running()
            previous, current = current, self.snapshot()
            now = time.monotonic()
            if current.fingerprint() != previous.fingerprint():
                stable_since = now
            quiet_for = SETTLED_AFTER if current.complete(attacks_sent) else SETTLED_AFTER_IF_SHORT
            if not current.batches_in_flight and now - stable_since >= quiet_for:
                break
        return current


def agent_requests(web: Process) -> list[tuple[str, str, int]]:
    """(method, path, status) of every agent-protocol request in gunicorn's access log."""
    found = []
    for line in web.stdout_path.read_text(errors="replace").splitlines():
        match = _ACCESS_LINE.search(line)
        if match and _AGENT_PATH.match(match["path"]):
            found.append((match["method"], match["path"], int(match["status"])))
    return found


def test_ddtrace_reports_normal_traffic_and_attacks_to_the_console(
    database_url: str, broker_url: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    # Seconds since the start at the end of each phase, printed (with -s, or on failure).
    timings: dict[str, float] = {}

    def reached(phase: str) -> None:
        timings[phase] = round(time.monotonic() - started, 1)

    env = production_environ(database_url=database_url, broker_url=broker_url, tmp_path=tmp_path)
    migrate = run(resolve(service_command("migrate")), env)
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    created = run(
        [sys.executable, "manage.py", "create_api_key", "--name", "ci", "--scopes", "read"], env
    )
    assert created.returncode == 0, created.stdout + created.stderr
    api_key = created.stdout.strip().splitlines()[-1]
    reached("migrated")

    console_port = free_port()
    app_port = free_port()
    while app_port == console_port:
        app_port = free_port()
    console_url, app_url = f"http://127.0.0.1:{console_port}", f"http://127.0.0.1:{app_port}"
    console = Console(console_url, api_key, database_url)

    processes: list[Process] = []
    snapshot: Snapshot | None = None
    passed = False
    try:
        web = Process(
            "web",
            with_option(resolve(service_command("web")), "--bind", f"127.0.0.1:{console_port}"),
            env,
            tmp_path,
        )
        processes.append(web)
        worker = Process("worker", resolve(service_command("worker")), env, tmp_path)
        processes.append(worker)
        status, health = wait_for_healthz(f"{console_url}/healthz", web)
        assert (status, health["status"]) == (200, "ok"), health
        reached("console up")

        app = Process(
            "app",
            [str(BIN_DIR / "ddtrace-run"), sys.executable, str(APP_SOURCE), str(app_port)],
            app_environ(console_url),
            tmp_path,
        )
        processes.append(app)
        wait_for_app(app_url, app)
        reached("app up")

        for path in NORMAL_PATHS:
            status, body = http_get(f"{app_url}{path}", {"User-Agent": NORMAL_USER_AGENT})
            assert status == 200, (path, status, body)
        attacks_sent = 0
        for attack in ATTACKS:
            headers = {"User-Agent": attack.user_agent}
            if attack.forwarded_for:
                headers["X-Forwarded-For"] = attack.forwarded_for
            status, body = http_get(f"{app_url}{attack.path}", headers)
            # Nothing here is blocked: the tracer only reports these.
            assert status == attack.status, (attack, status, body)
            attacks_sent += 1
        assert attacks_sent == 6
        reached("traffic sent")

        snapshot = console.wait_until_settled(attacks_sent, processes)
        reached("settled")

        # The tracer's requests were all accepted, and each batch was processed by the worker.
        requests = agent_requests(web)
        assert [r for r in requests if r[2] not in (200, 202)] == [], requests
        sent = {(method, path) for method, path, _ in requests}
        assert ("POST", "/v0.4/traces") in sent, requests
        assert ("POST", "/telemetry/proxy/api/v2/apmtelemetry") in sent, requests
        assert snapshot.failed_batches == [], snapshot.describe()
        assert re.search(
            r"Task traces\.tasks\.process_batch\[[0-9a-f-]+\] succeeded", worker.output()
        ), worker.describe()
        assert not re.search(r"\b(ERROR|CRITICAL)\b|Traceback", worker.output()), worker.describe()

        # The catalog: the service as its tracer describes it, one suspicious request per attack.
        service = snapshot.service()
        assert service is not None, snapshot.describe()
        assert service["asm_enabled"] is True, service
        assert service["language"] == "python", service
        assert service["version"] == VERSION, service
        assert service["tracer_version"] == "4.16.0", service
        assert service["suspicious_requests"] == attacks_sent, snapshot.describe()

        # The events: one request per attack sent, of the rule type the attack is.
        events = snapshot.events
        by_type = snapshot.requests_by_type()
        assert set(by_type) == {"security_scanner", "sql_injection", "xss"}, snapshot.describe()
        assert len(set().union(*by_type.values())) == attacks_sent, snapshot.describe()
        assert len(by_type["security_scanner"]) == 2, snapshot.describe()
        assert len(by_type["sql_injection"]) == 2, snapshot.describe()
        assert len(by_type["xss"]) == 2, snapshot.describe()
        assert all(e["service"] == SERVICE and e["env"] == ENV for e in events), events
        assert all(e["source"] == "tracer" for e in events), events

        # Datadog's test scanner, on an existing route and on one that does not exist.
        scanner_events = [e for e in events if e["rule_type"] == "security_scanner"]
        assert {e["rule_id"] for e in scanner_events} == {"ua0-600-55x"}, scanner_events
        by_path = {e["url"].removeprefix(app_url): e for e in scanner_events}
        assert set(by_path) == {"/", UNKNOWN_PATH}, scanner_events
        assert by_path["/"]["status_code"] == 200, by_path["/"]
        assert by_path[UNKNOWN_PATH]["status_code"] == 404, by_path[UNKNOWN_PATH]
        assert all(e["client_ip"] == "127.0.0.1" for e in scanner_events), scanner_events

        # SQL injection: the query parameter and the value that matched.
        sqli_events = [e for e in events if e["rule_type"] == "sql_injection"]
        assert len(sqli_events) >= 2, sqli_events
        injected = [
            parameter
            for event in sqli_events
            for parameter in event["parameters"]
            if parameter.get("address") == "server.request.query"
            and (parameter.get("key_path") or [None])[0] == "id"
            and SQL_INJECTION in str(parameter.get("value"))
        ]
        assert injected, sqli_events
        assert all(e["route"] == "/products" for e in sqli_events), sqli_events
        xss_events = [e for e in events if e["rule_type"] == "xss"]
        assert len(xss_events) >= 2, xss_events
        assert all(e["route"] == "/search" for e in xss_events), xss_events

        # Each request's client is the address its X-Forwarded-For named.
        sent_from = {(a.rule_type, a.forwarded_for) for a in ATTACKS if a.forwarded_for}
        seen_from = {(e["rule_type"], e["client_ip"]) for e in sqli_events + xss_events}
        assert seen_from == sent_from, snapshot.describe()
        assert {e["client_ip_source"] for e in sqli_events + xss_events} == {"http.client_ip"}

        # The console's own rules flag the same SQL injection and XSS requests, and nothing
        # in the normal traffic.
        console_events = console.get(
            f"/api/v1/security-events?service={SERVICE}&source=console&limit=500"
        )["results"]
        flagged = {(e["rule_type"], e["trace_id"], e["span_id"]) for e in console_events}
        for tracer_event in sqli_events + xss_events:
            key = (tracer_event["rule_type"], tracer_event["trace_id"], tracer_event["span_id"])
            assert key in flagged, console_events
        attacked = {(e["trace_id"], e["span_id"]) for e in events}
        assert {(e["trace_id"], e["span_id"]) for e in console_events} <= attacked, console_events

        # A trace of an attack: its spans, with the request's flask.request entry span.
        event = sqli_events[0]
        trace = console.get(f"/api/v1/traces/{event['trace_id']}")
        assert trace["trace_id"] == event["trace_id"]
        entry = [s for s in trace["spans"] if s["span_id"] == event["span_id"]]
        assert [s["name"] for s in entry] == ["flask.request"], trace["spans"]
        assert (entry[0]["service_name"], entry[0]["env"]) == (SERVICE, ENV), entry
        assert entry[0]["resource"] == "GET /products", entry
        assert event["id"] in {e["id"] for e in trace["security_events"]}, trace

        # Telemetry: the dependencies the app loaded.
        assert {"flask", "werkzeug"} <= snapshot.dependencies, snapshot.describe()

        # Every batch the intake accepted was processed: none is left waiting for a sweep.
        assert snapshot.pending_batches == [], snapshot.describe()
        assert set(snapshot.batches) == {"done"}, snapshot.describe()
        passed = True
    finally:
        for process in reversed(processes):
            process.stop(timeout=STOP_TIMEOUT)
        reached("stopped")
        print(f"timings, seconds since the start: {timings}")
        if not passed:
            # pytest shows this beside the failure: what each process said, and what the
            # console showed last.
            for process in processes:
                print(process.describe(tail=8000))
            if snapshot is not None:
                print("--- console snapshot\n" + snapshot.describe())
