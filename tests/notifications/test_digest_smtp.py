"""The weekly digest through a real SMTP server (aiosmtpd, from tests/notifications/conftest.py)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from notifications.digest import digest_due_send
from notifications.models import DigestSubscription
from tests.factories import ServiceFactory, UserFactory
from tests.notifications.support import SMTPServer
from traces.models import SecurityEvent

pytestmark = pytest.mark.django_db

NOW = datetime(2025, 3, 10, 9, 5, tzinfo=ZoneInfo("UTC"))
HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


def test_the_digest_arrives_as_text_and_html(smtp: SMTPServer) -> None:
    user = UserFactory.create(email="sam@example.com")
    DigestSubscription.objects.create(user=user, weekday=0, hour=9, timezone="UTC")
    service = ServiceFactory.create(name=f"web{HOSTILE}")
    SecurityEvent.objects.create(
        trace_id="f" * 32,
        span_id="2" * 16,
        service=service,
        source="tracer",
        rule_id="crs-942-100",
        route="/login",
        client_ip="203.0.113.7",
        detected_at=NOW - timedelta(days=1),
    )

    assert digest_due_send(now=NOW) == 1
    assert digest_due_send(now=NOW + timedelta(minutes=15)) == 0
    ((sender, recipients, message),) = smtp.messages
    assert recipients == ["sam@example.com"]
    assert sender == "asm-console@localhost"
    # Long headers arrive folded over two lines.
    assert " ".join(message["Subject"].split()) == (
        "Weekly security digest: 1 suspicious request, 0 new signals (week to 10 Mar 2025)"
    )
    assert message["List-Unsubscribe"].endswith("/notifications/digest/>")
    assert message.get_content_type() == "multipart/alternative"
    parts = {
        part.get_content_type(): part.get_payload(decode=True)
        for part in message.walk()
        if not part.is_multipart()
    }
    assert list(parts) == ["text/plain", "text/html"]
    text, html = (bytes(payload).decode() for payload in parts.values())
    assert f"- web{HOSTILE} [prod]: 1 / 0 / +1" in text
    assert "203.0.113.7: 1 request" in text
    assert "<script" not in html
    assert "web&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "203.0.113.7" in html


def test_a_refused_address_is_not_tried_again_that_week(smtp: SMTPServer) -> None:
    smtp.sink.refuse = "550 5.1.1 No such user"
    subscription = DigestSubscription.objects.create(
        user=UserFactory.create(), weekday=0, hour=9, timezone="UTC"
    )
    assert digest_due_send(now=NOW) == 0
    subscription.refresh_from_db()
    assert subscription.last_week_sent == date(2025, 3, 10)
    smtp.sink.refuse = None
    assert digest_due_send(now=NOW + timedelta(minutes=15)) == 0
    assert smtp.messages == []


def test_a_server_that_is_down_gets_the_digest_once_back(smtp: SMTPServer, settings: Any) -> None:
    subscription = DigestSubscription.objects.create(
        user=UserFactory.create(), weekday=0, hour=9, timezone="UTC"
    )
    port = settings.EMAIL_PORT
    settings.EMAIL_PORT = port + 1 if port < 65535 else port - 1
    assert digest_due_send(now=NOW) == 0
    subscription.refresh_from_db()
    assert subscription.last_week_sent is None
    settings.EMAIL_PORT = port
    assert digest_due_send(now=NOW + timedelta(minutes=15)) == 1
    assert len(smtp.messages) == 1
