"""The ingest benchmark behind `bench/ingest`: spans per second through the intake (HTTP, one
gunicorn) and through one worker's processing, beside a plain `COPY` of the same rows.

Everything runs against a PostgreSQL database of its own, created for the run and dropped at
the end, and a Redis database that must be empty (the intake publishes one task per batch there;
nothing consumes them, and the run empties that database when it ends).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import os
import platform
import random
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import msgpack
import psycopg
import redis
import yaml
from psycopg import sql

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "ddtrace"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
BIN_DIR = Path(sys.executable).parent

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/postgres"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/12"
# The aims of the issue: processing at no less than a quarter of COPY's rate, and the intake
# acknowledging at least 20,000 spans/s.
AIM_RATIO_TO_COPY = 0.25
AIM_INTAKE_SPANS_PER_S = 20_000
STARTUP_TIMEOUT = 60.0
REQUEST_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
# The capture whose request headers every request carries (X-Datadog-Trace-Count set per body).
HEADERS_CAPTURE = "v04_03_sqli_xss_path_traversal"
NOT_FORWARDED_HEADERS = {"host", "content-length", "content-type", "x-datadog-trace-count"}

Chunk = list[dict[str, Any]]


class BenchError(Exception):
    """The run cannot go on; the message says why."""


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- Payloads -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    """The trace chunks of the real v0.4 captures, split by whether they carry appsec data."""

    normal: list[Chunk]
    attack: list[Chunk]
    headers: dict[str, str]


def _is_attack(chunk: Chunk) -> bool:
    return any(
        "appsec" in (span.get("meta_struct") or {}) or "_dd.appsec.json" in span["meta"]
        for span in chunk
    )


def load_corpus() -> Corpus:
    normal: list[Chunk] = []
    attack: list[Chunk] = []
    for path in sorted(FIXTURES.glob("v04_*.msgpack")):
        for chunk in msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False):
            (attack if _is_attack(chunk) else normal).append(chunk)
    if not normal or not attack:
        raise BenchError(f"no v0.4 captures with and without appsec data in {FIXTURES}")
    capture = json.loads((FIXTURES / f"{HEADERS_CAPTURE}.json").read_text())
    headers = {
        key: value
        for key, value in capture["_capture"]["request_headers"]
        if key not in NOT_FORWARDED_HEADERS
    }
    return Corpus(normal=normal, attack=attack, headers=headers)


def _renumber(chunk: Chunk, rng: random.Random, start_ns: int) -> Chunk:
    """A copy of a chunk as a new trace: fresh trace and span ids (parent links kept), the
    128-bit high bits renewed, start times moved to `start_ns`."""
    trace_low = rng.getrandbits(64) or 1
    trace_high = f"{rng.getrandbits(64):016x}"
    new_ids: dict[int, int] = {}

    def new_id(old: int) -> int:
        if old not in new_ids:
            candidate = rng.getrandbits(64) or 1
            while candidate in new_ids.values():
                candidate = rng.getrandbits(64) or 1
            new_ids[old] = candidate
        return new_ids[old]

    base = min(span["start"] for span in chunk)
    renumbered = []
    for span in chunk:
        copy = dict(span)
        copy["trace_id"] = trace_low
        copy["span_id"] = new_id(span["span_id"])
        if span.get("parent_id"):
            # A parent outside the chunk (another service) gets a fresh id too.
            copy["parent_id"] = new_id(span["parent_id"])
        copy["start"] = start_ns + span["start"] - base
        if "_dd.p.tid" in span["meta"]:
            copy["meta"] = {**span["meta"], "_dd.p.tid": trace_high}
        renumbered.append(copy)
    return renumbered


@dataclass(frozen=True)
class Payload:
    body: bytes
    traces: int
    spans: int


def generate_payloads(
    corpus: Corpus,
    *,
    spans: int,
    traces_per_request: int,
    attack_share: float,
    rng: random.Random,
) -> list[Payload]:
    """Request bodies holding `spans` spans in all, each new trace a real chunk renumbered;
    the last chunk is cut short to land on exactly `spans`."""
    now_ns = time.time_ns()
    payloads: list[Payload] = []
    chunks: list[Chunk] = []
    remaining = spans
    while remaining > 0:
        source = corpus.attack if rng.random() < attack_share else corpus.normal
        start_ns = now_ns - rng.randrange(60 * 10**9)
        chunk = _renumber(rng.choice(source), rng, start_ns)[:remaining]
        remaining -= len(chunk)
        chunks.append(chunk)
        if len(chunks) == traces_per_request or remaining == 0:
            payloads.append(
                Payload(
                    body=msgpack.packb(chunks, use_bin_type=True),
                    traces=len(chunks),
                    spans=sum(len(c) for c in chunks),
                )
            )
            chunks = []
    return payloads


# --- Database, broker and processes ---------------------------------------------------------


def database_url_for(server_url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(server_url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


@contextlib.contextmanager
def bench_database(server_url: str) -> Iterator[str]:
    """A fresh database on the server of `server_url`, dropped on the way out."""
    try:
        admin = psycopg.connect(server_url, connect_timeout=5, autocommit=True)
    except psycopg.OperationalError as exc:
        raise BenchError(f"PostgreSQL is not reachable at {server_url}: {exc}") from None
    name = f"asm_bench_{secrets.token_hex(6)}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    log(f"created database {name}")
    try:
        yield database_url_for(server_url, name)
    finally:
        with psycopg.connect(server_url, connect_timeout=5, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        log(f"dropped database {name}")


@contextlib.contextmanager
def bench_broker(broker_url: str) -> Iterator[str]:
    """The Redis database the intake publishes to: it must start empty, as everything in it is
    then the run's own, and is emptied at the end."""
    client = redis.Redis.from_url(broker_url, socket_connect_timeout=3, socket_timeout=10)
    try:
        size = client.dbsize()
    except redis.RedisError as exc:
        raise BenchError(f"Redis is not reachable at {broker_url}: {exc}") from None
    if size:
        client.close()
        raise BenchError(
            f"the Redis database {broker_url} holds {size} keys; the benchmark empties its broker "
            "database at the end, so it needs one nothing else uses (see --broker-url)"
        )
    try:
        yield broker_url
    finally:
        client.flushdb()
        client.close()


def app_environ(*, database_url: str, broker_url: str, data_dir: Path) -> dict[str, str]:
    """The production settings the console runs with, pointed at the bench's database."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker_url,
        "SECRET_KEY": secrets.token_urlsafe(48),
        "ASM_HTTPS": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "ASM_DATA_DIR": str(data_dir),
        "DEBUG": "false",
        "DJANGO_SETTINGS_MODULE": "asm_console.settings",
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHONUNBUFFERED": "1",
        "XDG_RUNTIME_DIR": str(data_dir),
    }


def migrate(env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise BenchError(f"migrate failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")


def option_value(argv: list[str], option: str) -> str | None:
    for index, argument in enumerate(argv):
        if argument == option and index + 1 < len(argv):
            return argv[index + 1]
        if argument.startswith(f"{option}="):
            return argument.split("=", 1)[1]
    return None


def _replace_option(argv: list[str], option: str, value: str) -> list[str]:
    for index, argument in enumerate(argv):
        if argument == option:
            return [*argv[: index + 1], value, *argv[index + 2 :]]
        if argument.startswith(f"{option}="):
            return [*argv[:index], f"{option}={value}", *argv[index + 1 :]]
    return [*argv, option, value]


def web_command(*, port: int, workers: int | None, threads: int | None) -> list[str]:
    """The web service's command of docker-compose.yml, bound to 127.0.0.1:<port>, its
    numbers of workers and threads replaced when given."""
    command = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["web"]["command"]
    argv = shlex.split(command) if isinstance(command, str) else [str(part) for part in command]
    if argv[0] != "gunicorn":
        raise BenchError(f"the web service of {COMPOSE_FILE.name} does not run gunicorn: {argv}")
    argv = [str(BIN_DIR / "gunicorn"), *argv[1:]]
    argv = _replace_option(argv, "--bind", f"127.0.0.1:{port}")
    if workers is not None:
        argv = _replace_option(argv, "--workers", str(workers))
    if threads is not None:
        argv = _replace_option(argv, "--threads", str(threads))
    return argv


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """gunicorn in its own process group, its output in a file."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] = field(init=False)

    def __post_init__(self) -> None:
        with self.log_path.open("wb") as output:
            self.popen = subprocess.Popen(  # noqa: S603 (gunicorn of this virtualenv)
                self.argv,
                cwd=REPO_ROOT,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_healthy(self, port: int) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        last_error = ""
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise BenchError(f"gunicorn exited early:\n{self.tail()}")
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                connection.request("GET", "/healthz")
                response = connection.getresponse()
                body = response.read()
                if response.status == 200:
                    return
                last_error = f"{response.status} {body[:300]!r}"
            except OSError as exc:
                last_error = repr(exc)
            finally:
                connection.close()
            time.sleep(0.2)
        raise BenchError(f"gunicorn never answered /healthz: {last_error}\n{self.tail()}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=STOP_TIMEOUT)
        # Whatever is left of the group (a worker that did not exit) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=STOP_TIMEOUT)


# --- The three measurements -----------------------------------------------------------------


@dataclass
class IntakeResult:
    spans: int  # acknowledged (answered 200) within the timed run
    requests: int
    seconds: float
    failures: list[str]

    @property
    def spans_per_s(self) -> float:
        return self.spans / self.seconds if self.seconds else 0.0


def _post(
    connection: http.client.HTTPConnection, payload: Payload, headers: dict[str, str]
) -> tuple[int, bytes]:
    connection.request(
        "POST",
        "/v0.4/traces",
        body=payload.body,
        headers={
            **headers,
            "Content-Type": "application/msgpack",
            "X-Datadog-Trace-Count": str(payload.traces),
        },
    )
    response = connection.getresponse()
    return response.status, response.read()


def drive_intake(
    *, port: int, payloads: list[Payload], headers: dict[str, str], clients: int, deadline: float
) -> IntakeResult:
    """POST every payload from `clients` threads on keep-alive connections; the clock runs from
    the first request to the last 200."""
    clients = max(1, min(clients, len(payloads)))
    next_index = itertools.count()
    start = threading.Barrier(clients + 1)
    lock = threading.Lock()
    acknowledged = [0, 0]  # spans, requests
    last_ok = [0.0]
    failures: list[str] = []

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
        try:
            try:
                connection.connect()
            except OSError as exc:
                with lock:
                    failures.append(f"cannot connect: {exc!r}")
                start.abort()  # the others stop waiting, and so does the clock
                return
            start.wait(timeout=STARTUP_TIMEOUT)
            while (index := next(next_index)) < len(payloads) and time.monotonic() < deadline:
                payload = payloads[index]
                try:
                    status, body = _post(connection, payload, headers)
                except (OSError, http.client.HTTPException) as exc:
                    connection.close()  # reconnects on the next request
                    with lock:
                        failures.append(f"request {index}: {exc!r}")
                    continue
                now = time.perf_counter()
                with lock:
                    if status == 200:
                        acknowledged[0] += payload.spans
                        acknowledged[1] += 1
                        last_ok[0] = max(last_ok[0], now)
                    else:
                        failures.append(f"request {index}: {status} {body[:200]!r}")
        except threading.BrokenBarrierError:
            pass
        finally:
            connection.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        start.wait(timeout=STARTUP_TIMEOUT)
    except threading.BrokenBarrierError:
        raise BenchError(f"the intake clients could not start: {failures[:3]}") from None
    began = time.perf_counter()
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()) + REQUEST_TIMEOUT)
    if any(thread.is_alive() for thread in threads):
        raise BenchError("the intake clients did not finish in time")
    if acknowledged[1] < len(payloads) and not failures:
        failures.append(
            f"only {acknowledged[1]} of {len(payloads)} requests sent before the timeout"
        )
    return IntakeResult(
        spans=acknowledged[0],
        requests=acknowledged[1],
        seconds=max(0.0, last_ok[0] - began),
        failures=failures,
    )


def wait_dispatched(database_url: str, deadline: float) -> int:
    """Wait for gunicorn's dispatch thread to mark every batch enqueued, so that the intake's
    background work is over (and holds no batch row) before the worker's clock starts. Returns
    how many batches were never marked."""
    with psycopg.connect(database_url, connect_timeout=5, autocommit=True) as connection:
        while True:
            row = connection.execute(
                "SELECT count(*) FROM traces_intakebatch WHERE enqueued_at IS NULL"
            ).fetchone()
            left = int(row[0]) if row else 0
            if left == 0 or time.monotonic() > deadline:
                return left
            time.sleep(0.2)


@dataclass
class ProcessResult:
    warmup_batches: int
    batches: int  # processed within the timed run
    spans: int
    seconds: float
    span_rows: int
    security_events: int
    business_events: int
    failed: int

    @property
    def spans_per_s(self) -> float:
        return self.spans / self.seconds if self.seconds else 0.0


def setup_django(env: dict[str, str]) -> None:
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "SECRET_KEY", "ASM_HTTPS", "ASM_DATA_DIR"):
        os.environ[name] = env[name]
    os.environ["DEBUG"] = "false"
    os.environ["DJANGO_SETTINGS_MODULE"] = "asm_console.settings"
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    import django

    django.setup()


def process_pending(deadline: float) -> ProcessResult:
    """What one worker process does with the batches the intake stored: `batch_process` for
    each, one after the other, in this process. The first batch of a long run is processed
    before the clock starts, as a started worker has done: what is built once per process
    (connections, the detection engine) is not counted against every span."""
    from django.db import connection

    from traces.models import BusinessLogicEvent, IntakeBatch, SecurityEvent, Span
    from traces.services import batch_process

    pending = list(
        IntakeBatch.objects.filter(state=IntakeBatch.State.PENDING)
        .order_by("pk")
        .values_list("pk", "span_count")
    )
    connection.ensure_connection()
    warmup_count = min(1, len(pending) // 20)
    warmup, pending = pending[:warmup_count], pending[warmup_count:]
    failed = sum(not batch_process(batch_id=batch_id) for batch_id, _ in warmup)
    processed = spans = 0
    began = time.perf_counter()
    for batch_id, span_count in pending:
        if time.monotonic() > deadline:
            raise BenchError(f"processing ran past the timeout after {processed} batches")
        if batch_process(batch_id=batch_id):
            processed += 1
            spans += span_count
    seconds = time.perf_counter() - began
    return ProcessResult(
        warmup_batches=len(warmup),
        batches=processed,
        spans=spans,
        seconds=seconds,
        span_rows=Span.objects.count(),
        security_events=SecurityEvent.objects.count(),
        business_events=BusinessLogicEvent.objects.count(),
        failed=failed + len(pending) - processed,
    )


@dataclass
class CopyResult:
    spans: int
    seconds: float

    @property
    def spans_per_s(self) -> float:
        return self.spans / self.seconds if self.seconds else 0.0


def copy_spans(database_url: str) -> CopyResult:
    """The rows the worker wrote to traces_span, written again by one `COPY ... FROM STDIN`
    into the same table, emptied first (its indexes and constraints all in place)."""
    from traces.models import Span

    columns = sql.SQL(", ").join(
        [sql.Identifier(str(f.column)) for f in Span._meta.concrete_fields if not f.primary_key]
    )
    with psycopg.connect(database_url, connect_timeout=5) as connection:
        data: list[bytes] = []
        with (
            connection.cursor() as cursor,
            cursor.copy(sql.SQL("COPY traces_span ({}) TO STDOUT").format(columns)) as copy,
        ):
            data.extend(bytes(block) for block in copy)
        connection.execute("TRUNCATE traces_span")
        connection.commit()
        began = time.perf_counter()
        with (
            connection.cursor() as cursor,
            cursor.copy(sql.SQL("COPY traces_span ({}) FROM STDIN").format(columns)) as copy,
        ):
            for block in data:
                copy.write(block)
        connection.commit()
        seconds = time.perf_counter() - began
        row = connection.execute("SELECT count(*) FROM traces_span").fetchone()
    return CopyResult(spans=int(row[0]) if row else 0, seconds=seconds)


# --- Reporting ------------------------------------------------------------------------------


def machine(database_url: str) -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    memory_gib = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 2**20, 1)
    with psycopg.connect(database_url, connect_timeout=5) as connection:
        row = connection.execute("SHOW server_version").fetchone()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": memory_gib,
        "postgresql": str(row[0]) if row else "",
        "python": platform.python_version(),
    }


def code_state() -> dict[str, Any]:
    """The commit measured, and the files of the working tree that differ from it."""

    def git(*argv: str) -> str:
        try:
            # git from PATH, as a developer runs it, with fixed arguments.
            result = subprocess.run(  # noqa: S603
                ["git", *argv],  # noqa: S607
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return result.stdout if result.returncode == 0 else ""

    modified = [
        line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
    ]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "modified": modified}


def report_table(result: dict[str, Any]) -> str:
    def rate(value: float) -> str:
        return f"{value:,.0f}"

    intake, processing, copy = result["intake"], result["processing"], result["copy"]
    about = result["machine"]
    ratio_ok = result["ratio_to_copy"] >= AIM_RATIO_TO_COPY
    intake_ok = result["intake_spans_per_s"] >= AIM_INTAKE_SPANS_PER_S
    rows = [
        (
            "intake (HTTP, acknowledged)",
            intake["spans"],
            intake["seconds"],
            rate(intake["spans_per_s"]),
        ),
        (
            "processing (one worker)",
            processing["spans"],
            processing["seconds"],
            rate(processing["spans_per_s"]),
        ),
        ("COPY into traces_span", copy["spans"], copy["seconds"], rate(copy["spans_per_s"])),
    ]
    lines = [
        f"{result['spans']:,} spans in {result['requests']} requests "
        f"(~{result['spans'] // max(1, result['requests'])} spans, "
        f"{result['traces_per_request']} traces per request, "
        f"{result['attack_share']:.0%} of traces with appsec triggers)",
        f"gunicorn {result['web_workers']} workers x {result['web_threads']} threads, "
        f"{result['clients']} client threads ({intake['warmup_requests']} warm-up requests "
        f"not timed); processing: batch_process in one process "
        f"({processing['warmup_batches']} warm-up batch not timed)",
        f"machine: {about['cpus']} CPUs ({about['cpu_model']}), {about['memory_gib']} GiB, "
        f"PostgreSQL {about['postgresql']}, Python {about['python']}, "
        f"load average {about['load_average_1m_at_start']} at start",
        f"code: commit {result['code']['commit'] or '?'}"
        + (
            f", modified: {' '.join(result['code']['modified'])}"
            if result["code"]["modified"]
            else ""
        ),
        "",
        f"{'phase':<30} {'spans':>9} {'seconds':>9} {'spans/s':>10}",
    ]
    lines += [
        f"{name:<30} {spans:>9,} {seconds:>9.3f} {per_s:>10}"
        for name, spans, seconds, per_s in rows
    ]
    lines += [
        "",
        f"processing / COPY: {result['ratio_to_copy']:.3f} "
        f"(aim >= {AIM_RATIO_TO_COPY}: {'met' if ratio_ok else 'NOT met'})",
        f"intake: {rate(result['intake_spans_per_s'])} spans/s "
        f"(aim >= {AIM_INTAKE_SPANS_PER_S:,}: {'met' if intake_ok else 'NOT met'})",
        f"stored: {processing['span_rows']:,} spans, {processing['security_events']:,} security "
        f"events, {processing['business_events']:,} business events",
    ]
    return "\n".join(lines)


# --- Command line ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/ingest",
        description="Spans per second through the intake and one worker, beside a plain COPY.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--spans", type=int, default=100_000, help="spans to send (100000)")
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help="a PostgreSQL server (and a database to connect to there) where the benchmark "
        f"creates and drops its own database ({DEFAULT_DATABASE_URL})",
    )
    parser.add_argument(
        "--broker-url",
        default=DEFAULT_BROKER_URL,
        help=f"an empty Redis database, emptied again at the end ({DEFAULT_BROKER_URL})",
    )
    parser.add_argument("--traces-per-request", type=int, default=50)
    parser.add_argument(
        "--attack-share",
        type=float,
        default=0.1,
        help="share of traces taken from captures with appsec triggers (0.1)",
    )
    parser.add_argument(
        "--web-workers", type=int, help="gunicorn workers (docker-compose.yml's: 3)"
    )
    parser.add_argument(
        "--web-threads", type=int, help="gunicorn threads per worker (docker-compose.yml's: 4)"
    )
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads (8)")
    parser.add_argument("--seed", type=int, default=1, help="payload generator seed (1)")
    parser.add_argument(
        "--timeout", type=float, default=900, help="give up after this many seconds (900)"
    )
    args = parser.parse_args(argv)
    if args.spans < 1 or args.traces_per_request < 1 or args.clients < 1:
        parser.error("--spans, --traces-per-request and --clients must be positive")
    if (args.web_workers is not None and args.web_workers < 1) or (
        args.web_threads is not None and args.web_threads < 1
    ):
        parser.error("--web-workers and --web-threads must be positive")
    if not 0 <= args.attack_share <= 1:
        parser.error("--attack-share must be between 0 and 1")
    return args


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C, so that the database is dropped and gunicorn stopped.
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> dict[str, Any]:
    deadline = time.monotonic() + args.timeout
    # Anything else running on the machine skews every figure: the report says how busy it was.
    load_before = os.getloadavg()[0]
    corpus = load_corpus()
    payloads = generate_payloads(
        corpus,
        spans=args.spans,
        traces_per_request=args.traces_per_request,
        attack_share=args.attack_share,
        # Reproducible payloads, not secrets.
        rng=random.Random(args.seed),  # noqa: S311
    )
    log(
        f"{len(payloads)} request bodies, {sum(len(p.body) for p in payloads) / 2**20:.1f} MiB, "
        f"{sum(p.spans for p in payloads)} spans"
    )
    port = free_port()
    argv = web_command(port=port, workers=args.web_workers, threads=args.web_threads)
    web_workers = int(option_value(argv, "--workers") or 1)
    web_threads = int(option_value(argv, "--threads") or 1)
    # Requests that open the server's database connections and warm its code paths, untimed:
    # one per server thread when there are many payloads, none for a tiny run.
    warmup_count = min(web_workers * web_threads, len(payloads) // 20)
    warmup, timed = payloads[:warmup_count], payloads[warmup_count:]

    with (
        tempfile.TemporaryDirectory(prefix="asm-bench-") as scratch,
        bench_database(args.database_url) as database_url,
        bench_broker(args.broker_url) as broker_url,
    ):
        env = app_environ(database_url=database_url, broker_url=broker_url, data_dir=Path(scratch))
        log("migrating")
        migrate(env)
        log(f"starting {' '.join(argv)}")
        server = Server(argv, env, Path(scratch) / "gunicorn.log")
        try:
            server.wait_healthy(port)
            if warmup:
                warmed = drive_intake(
                    port=port,
                    payloads=warmup,
                    headers=corpus.headers,
                    clients=args.clients,
                    deadline=deadline,
                )
                if warmed.failures:
                    raise BenchError(f"warm-up requests failed: {warmed.failures[:3]}")
            log(f"intake: {len(timed)} requests from {args.clients} clients")
            intake = drive_intake(
                port=port,
                payloads=timed,
                headers=corpus.headers,
                clients=args.clients,
                deadline=deadline,
            )
            undispatched = wait_dispatched(database_url, min(deadline, time.monotonic() + 60))
        except Exception:
            log(f"gunicorn output:\n{server.tail()}")
            raise
        finally:
            server.stop()
        if intake.failures:
            log(f"{len(intake.failures)} requests failed, e.g. {intake.failures[:3]}")
            log(f"gunicorn output:\n{server.tail()}")
        if undispatched:
            log(f"{undispatched} batches were never published to the broker")

        setup_django(env)
        from django.db import connections

        try:
            log("processing: batch_process for every pending batch, in this process")
            processing = process_pending(deadline)
            log("COPY")
            copy = copy_spans(database_url)
            about = machine(database_url)
            about["load_average_1m_at_start"] = round(load_before, 2)
        finally:
            connections.close_all()

    ratio = processing.spans_per_s / copy.spans_per_s if copy.spans_per_s else 0.0
    return {
        "intake_spans_per_s": round(intake.spans_per_s, 1),
        "processed_spans_per_s": round(processing.spans_per_s, 1),
        "copy_spans_per_s": round(copy.spans_per_s, 1),
        "ratio_to_copy": round(ratio, 4),
        "spans": sum(p.spans for p in payloads),
        "requests": len(payloads),
        "traces_per_request": args.traces_per_request,
        "attack_share": args.attack_share,
        "web_workers": web_workers,
        "web_threads": web_threads,
        "clients": args.clients,
        "intake": {
            "spans": intake.spans,
            "requests": intake.requests,
            "warmup_requests": len(warmup),
            "seconds": round(intake.seconds, 3),
            "spans_per_s": round(intake.spans_per_s, 1),
            "failures": len(intake.failures),
            "undispatched_batches": undispatched,
        },
        "processing": {
            "mode": "batch_process in one process (one worker, concurrency 1)",
            "warmup_batches": processing.warmup_batches,
            "batches": processing.batches,
            "spans": processing.spans,
            "seconds": round(processing.seconds, 3),
            "spans_per_s": round(processing.spans_per_s, 1),
            "failed_batches": processing.failed,
            "span_rows": processing.span_rows,
            "security_events": processing.security_events,
            "business_events": processing.business_events,
        },
        "copy": {
            "spans": copy.spans,
            "seconds": round(copy.seconds, 3),
            "spans_per_s": round(copy.spans_per_s, 1),
        },
        "machine": about,
        "code": code_state(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        result = run(args)
    except BenchError as exc:
        log(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    if args.json:
        print(json.dumps(result))
    else:
        print(report_table(result))
    ok = (
        result["intake"]["failures"] == 0
        and result["processing"]["failed_batches"] == 0
        and result["processing"]["span_rows"] == result["spans"]
    )
    if not ok:
        log("some spans were not accepted or not stored: see above")
    return 0 if ok else 1
