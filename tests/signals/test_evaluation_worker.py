"""A real Celery worker raises the signal: it processes an intake batch, and the batch's commit
enqueues the evaluation, which the same worker runs (no beat in this test)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client

from signals.models import Signal, SignalActivity
from signals.tasks import evaluate_signals_soon
from tests.traces.replay import send
from traces.models import IntakeBatch, SecurityEvent
from traces.tasks import process_batch

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _worker_env() -> dict[str, str]:
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
    return env


def _wait(condition: Callable[[], bool], seconds: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}\n{log.read_text()[-4000:]}")
        time.sleep(0.1)


def _process_pending() -> None:
    for batch_id in IntakeBatch.objects.filter(state=IntakeBatch.State.PENDING).values_list(
        "pk", flat=True
    ):
        process_batch.apply_async((batch_id,))


def test_worker_evaluates_after_each_batch(client: Client, tmp_path: Path) -> None:
    if connection.vendor != "postgresql" or not settings.CELERY_BROKER_URL.startswith("redis"):
        if os.environ.get("CI") and os.environ.get("DATABASE_URL"):
            pytest.fail("CI runs this test on PostgreSQL and Redis")
        pytest.skip("needs PostgreSQL and Redis (a worker process shares the database)")

    log = tmp_path / "worker.log"
    worker = subprocess.Popen(
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
        env=_worker_env(),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        # Datadog's test scanner on an existing route and a missing one.
        assert send(client, "v04_scanner_trace").status_code == 200
        _process_pending()

        def scanner_signal() -> Signal | None:
            return Signal.objects.filter(rule_id="security-scanner").first()

        _wait(lambda: scanner_signal() is not None, 60, "the scanner signal exists", log)
        first = scanner_signal()
        assert first is not None
        assert first.title.startswith("Security scanner detected")
        count = first.event_count
        assert count == SecurityEvent.objects.filter(rule_type="security_scanner").count()

        # A second scan (sqlmap, also a scanner to the console's rules) updates the signal.
        assert send(client, "v04_06_sqlmap_scanner_xff_redacted_password").status_code == 200
        _process_pending()

        def updated() -> bool:
            current = scanner_signal()
            return current is not None and current.event_count > count

        _wait(updated, 60, "the signal follows the second scan", log)
        assert Signal.objects.filter(rule_id="security-scanner").count() == 1
        assert not SecurityEvent.objects.filter(evaluated_at__isnull=True).exists()
        assert (
            SignalActivity.objects.filter(
                signal__rule_id="security-scanner", kind="created"
            ).count()
            == 1
        )
        assert "signals.tasks.evaluate_signals" in log.read_text()
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)


def test_enqueue_never_raises_when_the_broker_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    from signals import tasks

    def refuse(*args: object, **kwargs: object) -> None:
        raise ConnectionRefusedError("broker down")

    monkeypatch.setattr(tasks.evaluate_signals, "apply_async", refuse)
    monkeypatch.setattr(tasks, "_last_enqueue", 0.0)
    evaluate_signals_soon()  # logs, and leaves the events to the beat


def test_enqueue_is_throttled_and_delayed(monkeypatch: pytest.MonkeyPatch) -> None:
    from signals import tasks

    calls: list[dict[str, object]] = []
    monkeypatch.setattr(tasks.evaluate_signals, "apply_async", lambda *a, **kw: calls.append(kw))
    monkeypatch.setattr(tasks, "_last_enqueue", 0.0)
    evaluate_signals_soon()
    evaluate_signals_soon()
    assert calls == [{"countdown": tasks.ENQUEUE_EVERY_SECONDS, "retry": False}]


def test_processed_batch_enqueues_an_evaluation_on_commit(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from traces import tasks as trace_tasks

    calls: list[str] = []
    monkeypatch.setattr(trace_tasks, "evaluate_signals_soon", lambda: calls.append("soon"))
    send(client, "v04_scanner_trace")
    batch = IntakeBatch.objects.get()
    trace_tasks.process_batch(batch.pk)
    assert calls == ["soon"]
    trace_tasks.process_batch(batch.pk)  # already done: nothing new to evaluate
    assert calls == ["soon"]
