"""Each transport against a real local receiver: what it sends, and how it classifies the
answer (ok, temporary, permanent)."""

from __future__ import annotations

import hashlib
import hmac
import time
from email.message import Message as EmailMessage

import pytest

from notifications import transports
from notifications.models import Channel, Notification
from notifications.outbox import notifications_enqueue
from signals.models import Severity
from tests.notifications.support import (
    Answer,
    HTTPReceiver,
    SMTPServer,
    created,
    escalated,
    make_channel,
    make_rule,
    make_signal,
)

pytestmark = pytest.mark.django_db


def verify(secret: str, headers: dict[str, str], body: bytes, tolerance: int = 300) -> bool:
    """The receiver's check, as docs/notifications.md shows it."""
    timestamp = headers["X-ASM-Timestamp"]
    signature = headers["X-ASM-Signature"].removeprefix("sha256=")
    if abs(time.time() - int(timestamp)) > tolerance:
        return False
    expected = hmac.new(
        secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, signature)


def _decoded(part: EmailMessage) -> str:
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


def _notification(channel: Channel, *, escalate: bool = False) -> Notification:
    signal = make_signal(severity=Severity.MEDIUM if escalate else Severity.HIGH)
    make_rule(channel)
    activity = (
        escalated(signal, Severity.MEDIUM, Severity.CRITICAL) if escalate else created(signal)
    )
    (notification_id,) = notifications_enqueue(activity=activity)
    return Notification.objects.select_related("channel", "signal__service", "activity").get(
        pk=notification_id
    )


def test_webhook_sends_the_signal_as_signed_json(receiver: HTTPReceiver) -> None:
    channel = make_channel(Channel.Kind.WEBHOOK, url=receiver.url, secret="whsec_abc")
    notification = _notification(channel)
    result = transports.transport_for(channel).notify(notification)
    assert result == transports.Result.sent(200)
    (request,) = receiver.requests
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-ASM-Event"] == "created"
    assert request.headers["X-ASM-Delivery"] == str(notification.pk)
    assert verify("whsec_abc", request.headers, request.body)
    assert not verify("whsec_other", request.headers, request.body)
    assert not verify("whsec_abc", request.headers, request.body + b" ")
    body = request.json()
    signal = notification.signal
    assert signal is not None
    assert body["id"] == notification.pk
    assert body["event"] == "created"
    assert body["signal"] == {
        "id": signal.pk,
        "url": f"http://127.0.0.1:8000/signals/{signal.pk}/",
        "title": "SQL injection attempts on checkout from 203.0.113.9",
        "severity": "high",
        "previous_severity": None,
        "status": "open",
        "rule_id": "sqli-attempts",
        "rule_name": "SQL injection attempts",
        "service": "checkout",
        "env": "prod",
        "first_seen": signal.first_seen.isoformat(),
        "last_seen": signal.last_seen.isoformat(),
        "event_count": 123,
        "attackers": {
            "ips": [{"ip": "203.0.113.9", "count": 120}, {"ip": "198.51.100.4", "count": 3}],
            "users": [{"user": "alice", "count": 2}],
        },
        "routes": [{"route": "/api/orders/<id>", "count": 100}, {"route": "/login", "count": 23}],
    }


def test_webhook_escalation_names_both_severities(receiver: HTTPReceiver, settings) -> None:
    settings.ASM_BASE_URL = "https://console.example.com"
    channel = make_channel(Channel.Kind.WEBHOOK, url=receiver.url)
    transports.transport_for(channel).notify(_notification(channel, escalate=True))
    body = receiver.requests[0].json()
    assert body["event"] == "escalated"
    assert body["signal"]["severity"] == "critical"
    assert body["signal"]["previous_severity"] == "medium"
    assert body["signal"]["url"].startswith("https://console.example.com/signals/")


def test_slack_message_is_readable_and_escapes_attacker_text(receiver: HTTPReceiver) -> None:
    channel = make_channel(Channel.Kind.SLACK, url=receiver.url)
    notification = _notification(channel)
    signal = notification.signal
    assert signal is not None
    signal.title = "Attack <!channel> <https://evil.example|click> & more"
    signal.routes = {"/x<@U123>": 5}
    signal.save()
    notification.refresh_from_db()
    assert transports.transport_for(channel).notify(notification).ok
    payload = receiver.requests[0].json()
    text = str(payload)
    assert payload["text"].startswith("New HIGH signal: Attack &lt;!channel&gt;")
    assert "<!channel>" not in text
    assert "<https://evil.example|click>" not in text
    assert "<@U123>" not in text
    blocks = payload["blocks"]
    assert blocks[0]["text"]["text"] == "New HIGH signal"
    assert f"<http://127.0.0.1:8000/signals/{signal.pk}/|Attack &lt;!channel&gt;" in str(blocks[1])
    fields = [field["text"] for field in blocks[2]["fields"]]
    assert any("HIGH" in field for field in fields)
    assert "*Service / env*\ncheckout / prod" in fields
    assert "`203.0.113.9` (120)" in blocks[3]["text"]["text"]
    assert "`alice` (2)" in blocks[3]["text"]["text"]
    assert blocks[4]["elements"][0]["url"] == f"http://127.0.0.1:8000/signals/{signal.pk}/"


def test_email_goes_to_every_recipient_as_text_and_html(smtp: SMTPServer) -> None:
    channel = make_channel(Channel.Kind.EMAIL, email_to="soc@example.com, lead@example.com")
    notification = _notification(channel)
    signal = notification.signal
    assert signal is not None
    signal.title = "Attack on <b>checkout</b>\nBcc: victim@example.com"
    signal.save()
    notification.refresh_from_db()
    result = transports.transport_for(channel).notify(notification)
    assert result.ok, result.error
    ((sender, recipients, message),) = smtp.messages
    assert sender == "asm-console@localhost"
    assert recipients == ["soc@example.com", "lead@example.com"]
    assert message["Subject"] == ("[ASM] [HIGH] Attack on <b>checkout</b> Bcc: victim@example.com")
    assert message["Bcc"] is None
    parts = {part.get_content_type(): part for part in message.walk()}
    text, html = (_decoded(parts[kind]) for kind in ("text/plain", "text/html"))
    assert "Severity:  HIGH" in text
    assert "203.0.113.9 (120)" in text
    assert f"http://127.0.0.1:8000/signals/{signal.pk}/" in text
    assert "Attack on &lt;b&gt;checkout&lt;/b&gt;" in html
    assert "<b>checkout</b>" not in html
    assert f'href="http://127.0.0.1:8000/signals/{signal.pk}/"' in html


def test_email_refused_by_the_server_is_permanent(smtp: SMTPServer) -> None:
    smtp.sink.refuse = "550 5.1.1 No such user"
    channel = make_channel(Channel.Kind.EMAIL, email_to="nobody@example.com")
    result = transports.transport_for(channel).notify(_notification(channel))
    assert not result.ok
    assert not result.temporary
    assert "nobody@example.com" in result.error


def test_email_server_down_is_temporary(settings) -> None:
    from tests.notifications.support import free_port

    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    channel = make_channel(Channel.Kind.EMAIL)
    result = transports.transport_for(channel).notify(_notification(channel))
    assert (result.ok, result.temporary) == (False, True)


@pytest.mark.parametrize(
    ("answer", "temporary", "retry_after"),
    [
        (Answer(500, b"boom"), True, None),
        (Answer(503, b"down", {"Retry-After": "120"}), True, 120),
        (Answer(429, b"slow down", {"Retry-After": "30"}), True, 30),
        (Answer(404, b"no_service"), False, None),
        (Answer(400, b"invalid_payload"), False, None),
        (Answer(410, b"channel_is_archived"), False, None),
    ],
)
def test_http_answers_are_classified(
    receiver: HTTPReceiver, answer: Answer, temporary: bool, retry_after: int | None
) -> None:
    receiver.answer(answer)
    channel = make_channel(Channel.Kind.SLACK, url=receiver.url)
    result = transports.transport_for(channel).notify(_notification(channel))
    assert not result.ok
    assert result.temporary is temporary
    assert result.status_code == answer.status
    assert result.retry_after == retry_after
    assert result.error == f"HTTP {answer.status}: {answer.body.decode()}"


def test_a_timeout_is_temporary(receiver: HTTPReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transports, "HTTP_TIMEOUT", 0.3)
    receiver.answer(Answer(200, delay=1.5))
    channel = make_channel(Channel.Kind.WEBHOOK, url=receiver.url)
    result = transports.transport_for(channel).notify(_notification(channel))
    assert (result.ok, result.temporary) == (False, True)
    assert "did not answer" in result.error


def test_a_refused_address_is_permanent() -> None:
    channel = make_channel(Channel.Kind.WEBHOOK, url="http://169.254.169.254/latest/meta-data/")
    result = transports.transport_for(channel).notify(_notification(channel))
    assert (result.ok, result.temporary) == (False, False)
    assert "metadata" in result.error
