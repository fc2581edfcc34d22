"""From events to a message: the signal rules raise a signal, its creation and its escalation
are written to the outbox in the same transaction, and a worker delivers them."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from notifications import delivery
from notifications.models import Notification
from services.models import Service
from signals.evaluation import signals_evaluate
from signals.models import Signal
from tests.factories import ServiceFactory
from tests.notifications.support import HTTPReceiver, make_channel, make_rule
from traces.models import SecurityEvent

pytestmark = pytest.mark.django_db


def sqli(service: Service, span_id: str, when: Any) -> SecurityEvent:
    return SecurityEvent.objects.create(
        trace_id="f" * 32,
        span_id=span_id,
        service=service,
        env=service.env,
        source="tracer",
        rule_id="crs-942-100",
        rule_type="sql_injection",
        rule_category="attack_attempt",
        client_ip="203.0.113.50",
        route="/search",
        status_code=200,
        detected_at=when,
    )


def test_a_new_signal_and_its_escalation_reach_the_webhook(receiver: HTTPReceiver) -> None:
    make_rule(make_channel(url=receiver.url), severities=["low", "medium", "high", "critical"])
    service = ServiceFactory.create(name="shop", env="prod")
    start = timezone.now() - timedelta(minutes=5)
    for i in range(10):  # the SQL injection burst rule's LOW threshold
        sqli(service, f"{i:016x}", start + timedelta(seconds=i))
    signals_evaluate()
    signal = Signal.objects.get(rule_id="sqli-attempts")
    assert signal.severity == "low"
    assert Notification.objects.get().event == "created"
    assert delivery.notifications_send_due() == 1
    (first,) = receiver.requests
    body = json.loads(first.body)
    assert json.dumps(body).count(signal.title) >= 1, body

    for i in range(10, 100):  # MEDIUM from 100 requests in the window
        sqli(service, f"{i:016x}", start + timedelta(seconds=i))
    signals_evaluate()
    signal.refresh_from_db()
    assert signal.severity == "medium"
    assert sorted(Notification.objects.values_list("event", flat=True)) == [
        "created",
        "escalated",
    ]
    assert delivery.notifications_send_due() == 1
    assert len(receiver.requests) == 2
    # Evaluating again changes nothing and sends nothing more.
    signals_evaluate()
    assert delivery.notifications_send_due() == 0
    assert Notification.objects.count() == 2
