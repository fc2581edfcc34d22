"""A worker killed in the middle of a batch loses nothing the intake acknowledged, and
stores nothing twice."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgpack
import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from tests.traces.replay import FIXTURES
from traces.appsec import triggers
from traces.decoding import decode_v04
from traces.models import IntakeBatch, SecurityEvent, Span
from traces.tasks import process_batch, sweep_intake

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _copies(name: str, copies: int, first_id: int) -> bytes:
    """The capture's traces `copies` times over, each trace and span with a fresh id."""
    traces = msgpack.unpackb((FIXTURES / f"{name}.msgpack").read_bytes(), strict_map_key=False)
    next_id = itertools.count(first_id)
    chunks = []
    for _ in range(copies):
        for chunk in traces:
            trace_id = next(next_id)
            new_ids = {span["span_id"]: next(next_id) for span in chunk}
            renamed = []
            for span in chunk:
                span = dict(span, meta=dict(span["meta"]), trace_id=trace_id)
                span["meta"].pop("_dd.p.tid", None)
                span["span_id"] = new_ids[span["span_id"]]
                if span.get("parent_id"):
                    span["parent_id"] = new_ids.get(span["parent_id"], span["parent_id"])
                renamed.append(span)
            chunks.append(renamed)
    return bytes(msgpack.packb(chunks))


def _expected(body: bytes) -> tuple[set[tuple[str, str]], int]:
    """The (trace_id, span_id) pairs of a body, and how many rule matches it carries."""
    spans = [span for chunk in decode_v04(body) for span in chunk]
    return {(s.trace_id, s.span_id) for s in spans}, sum(len(list(triggers(s))) for s in spans)


def _worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "celery"),
            "-A",
            "asm_console",
            "worker",
            "--pool",
            "solo",
            "--concurrency",
            "1",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _locked(batch_id: int) -> bool:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM traces_intakebatch WHERE id = %s FOR UPDATE SKIP LOCKED", [batch_id]
        )
        return cursor.fetchone() is None


def _locked_by_a_worker(batch_id: int) -> bool:
    # Held across several looks: a worker's claim, not a passing update of the row.
    for _ in range(3):
        if not _locked(batch_id):
            return False
        time.sleep(0.05)
    return True


def _wait(condition: Any, seconds: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}\n{log.read_text()[-4000:]}")
        time.sleep(0.02)


def test_killed_worker_loses_no_acknowledged_span(client: Client, tmp_path: Path) -> None:
    if connection.vendor != "postgresql" or not settings.CELERY_BROKER_URL.startswith("redis"):
        if os.environ.get("CI") and os.environ.get("DATABASE_URL"):
            pytest.fail("CI runs this test on PostgreSQL and Redis")
        pytest.skip("needs PostgreSQL and Redis (a second process shares the database)")

    big = _copies("v04_03_sqli_xss_path_traversal", 800, 10**9)
    small = _copies("v04_04_cmdi_ssrf_log4shell_header", 20, 2 * 10**9)
    big_ids, big_events = _expected(big)
    small_ids, small_events = _expected(small)
    for body in (big, small):
        response = client.post(
            "/v0.4/traces", body, content_type="application/msgpack", REMOTE_ADDR="127.0.0.1"
        )
        assert response.status_code == 200
    big_batch = IntakeBatch.objects.get(span_count=len(big_ids))

    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        # The test database, which this test's transactions commit to.
        "DATABASE_URL": (
            f"postgres://{quote(db['USER'])}:{quote(db['PASSWORD'] or '')}"
            f"@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"
        ),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "DJANGO_SETTINGS_MODULE": "asm_console.settings",
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    first_log, second_log = tmp_path / "worker1.log", tmp_path / "worker2.log"
    first = _worker(env, first_log)
    try:
        process_batch.apply_async((big_batch.pk,))
        _wait(
            lambda: _locked_by_a_worker(big_batch.pk), 60, "the worker holds the batch", first_log
        )
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)

    # The dead worker's transaction is rolled back: the batch is pending again, nothing of it
    # was kept half-way.
    _wait(lambda: not _locked(big_batch.pk), 30, "PostgreSQL drops the lock", first_log)
    big_batch.refresh_from_db()
    assert big_batch.state == IntakeBatch.State.PENDING
    big_traces = {trace_id for trace_id, _ in big_ids}
    assert not Span.objects.filter(trace_id__in=big_traces).exists()
    assert not SecurityEvent.objects.filter(trace_id__in=big_traces).exists()

    # The sweep finds what the dead worker held (its message is gone with it) and a new
    # worker finishes the work.
    second = _worker(env, second_log)
    try:
        IntakeBatch.objects.update(
            received_at=timezone.now() - timedelta(minutes=10),
            enqueued_at=timezone.now() - timedelta(minutes=10),
        )
        sweep_intake()
        _wait(
            lambda: not IntakeBatch.objects.filter(state=IntakeBatch.State.PENDING).exists(),
            120,
            "every batch is done",
            second_log,
        )
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(second.pid, signal.SIGKILL)

    # Every acknowledged span, once; every rule match, once.
    assert IntakeBatch.objects.filter(state=IntakeBatch.State.DONE).count() == 2
    assert set(Span.objects.values_list("trace_id", "span_id")) == big_ids | small_ids
    assert Span.objects.count() == len(big_ids | small_ids)
    tracer_events = SecurityEvent.objects.filter(source=SecurityEvent.Source.TRACER)
    assert tracer_events.count() == big_events + small_events
    console_events = SecurityEvent.objects.filter(source=SecurityEvent.Source.CONSOLE)
    assert console_events.count() == (
        console_events.values("trace_id", "span_id", "rule_id").distinct().count()
    )
