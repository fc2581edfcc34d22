from __future__ import annotations

import time
from datetime import timedelta

import pytest
from axes.models import AccessAttempt, AccessLog
from celery.contrib.testing.worker import start_worker
from django.contrib.sessions.models import Session
from django.utils import timezone

from accounts.services import auth_records_prune
from accounts.tasks import prune_auth_records
from asm_console.celery import app as celery_app


def _expired_and_live_records() -> None:
    now = timezone.now()
    Session.objects.create(session_key="e" * 32, session_data="", expire_date=now - timedelta(1))
    Session.objects.create(session_key="l" * 32, session_data="", expire_date=now + timedelta(1))
    for age, ip in ((timedelta(days=2), "192.0.2.1"), (timedelta(0), "192.0.2.2")):
        attempt = AccessAttempt.objects.create(
            ip_address=ip, username="u", failures_since_start=1, get_data="", post_data=""
        )
        AccessAttempt.objects.filter(pk=attempt.pk).update(attempt_time=now - age)
        log = AccessLog.objects.create(ip_address=ip, username="u")
        AccessLog.objects.filter(pk=log.pk).update(attempt_time=now - age * 100)


@pytest.mark.django_db
def test_prune_keeps_what_is_still_current() -> None:
    _expired_and_live_records()
    assert auth_records_prune() == {
        "sessions": 1,
        "login_attempts": 1,
        "login_logs": 1,
        "login_failure_logs": 0,
    }
    assert list(Session.objects.values_list("session_key", flat=True)) == ["l" * 32]
    assert list(AccessAttempt.objects.values_list("ip_address", flat=True)) == ["192.0.2.2"]
    assert list(AccessLog.objects.values_list("ip_address", flat=True)) == ["192.0.2.2"]


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_scheduled_task_runs_through_a_real_worker() -> None:
    """Enqueue through the configured broker (Redis in CI) and let a real worker run it."""
    _expired_and_live_records()
    with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=15):
        prune_auth_records.delay()
        deadline = time.monotonic() + 20
        while Session.objects.filter(session_key="e" * 32).exists():
            assert time.monotonic() < deadline, "the worker did not run the task in 20 s"
            time.sleep(0.1)
    assert Session.objects.count() == 1
    assert AccessAttempt.objects.count() == 1
