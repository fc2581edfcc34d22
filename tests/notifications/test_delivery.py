"""The outbox: written with the signal change, sent by workers that claim each notification
once, retried with backoff on temporary failures only, every attempt logged."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from notifications import delivery, transports
from notifications.models import Channel, Delivery, Notification
from notifications.outbox import notification_send_test, notifications_enqueue
from signals.models import Severity, SignalActivity
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


def _make_due(notification_id: int) -> None:
    Notification.objects.filter(pk=notification_id).update(next_attempt_at=timezone.now())


@pytest.mark.django_db
def test_a_created_signal_notifies_each_matching_channel_once() -> None:
    first, second, unused = (make_channel(name=n) for n in ("a", "b", "c"))
    make_rule(first, second, name="all high")
    make_rule(second, name="overlapping")
    make_rule(unused, name="critical only", severities=["critical"])
    signal = make_signal(severity=Severity.HIGH)
    activity = created(signal)
    ids = notifications_enqueue(activity=activity)
    rows = Notification.objects.filter(pk__in=ids).order_by("channel__name")
    assert [(n.channel.name, n.rule.name if n.rule else None, n.event) for n in rows] == [
        ("a", "all high", "created"),
        ("b", "all high", "created"),
    ]
    assert {n.state for n in rows} == {"pending"}
    # The same change enqueued again (a retried evaluation) writes nothing new.
    notifications_enqueue(activity=activity)
    assert Notification.objects.count() == 2


@pytest.mark.django_db
def test_disabled_rules_and_channels_are_skipped() -> None:
    enabled, disabled = make_channel(name="on"), make_channel(name="off", enabled=False)
    make_rule(enabled, disabled)
    make_rule(make_channel(name="rule off"), enabled=False)
    ids = notifications_enqueue(activity=created(make_signal()))
    assert [Notification.objects.get(pk=pk).channel.name for pk in ids] == ["on"]


@pytest.mark.django_db
def test_only_escalations_and_creations_notify() -> None:
    make_rule(make_channel(), severities=["low", "medium", "high", "critical"])
    signal = make_signal(severity=Severity.MEDIUM)
    assert notifications_enqueue(activity=escalated(signal, "medium", "high"))
    assert not notifications_enqueue(activity=escalated(signal, "high", "low"))
    comment = SignalActivity.objects.create(
        signal=signal, kind=SignalActivity.Kind.COMMENTED, message="looking"
    )
    assert not notifications_enqueue(activity=comment)
    assert Notification.objects.get().event == Notification.Event.ESCALATED


@pytest.mark.django_db
def test_escalation_matches_on_the_new_severity() -> None:
    make_rule(make_channel(), severities=["critical"])
    signal = make_signal(severity=Severity.HIGH)
    assert not notifications_enqueue(activity=created(signal))
    assert notifications_enqueue(activity=escalated(signal, "high", "critical"))


@pytest.mark.django_db(transaction=True)
def test_nothing_is_written_or_sent_when_the_change_rolls_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    published: list[list[int]] = []
    monkeypatch.setattr(
        "notifications.outbox.notifications_dispatch", lambda ids: published.append(ids)
    )
    make_rule(make_channel())
    signal = make_signal()

    def failing_change() -> None:
        with transaction.atomic():
            notifications_enqueue(activity=created(signal))
            raise RuntimeError("the evaluation failed")

    with pytest.raises(RuntimeError):
        failing_change()
    assert not Notification.objects.exists()
    assert published == []
    with transaction.atomic():
        ids = notifications_enqueue(activity=created(signal))
        assert published == []  # not before the commit
    assert published == [ids]


@pytest.mark.django_db
def test_delivered_on_the_first_attempt(receiver: HTTPReceiver) -> None:
    make_rule(make_channel(url=receiver.url))
    (notification_id,) = notifications_enqueue(activity=created(make_signal()))
    row = delivery.notification_deliver(notification_id=notification_id)
    assert row is not None
    assert (row.attempt, row.ok, row.status_code, row.error) == (1, True, 200, "")
    notification = Notification.objects.get(pk=notification_id)
    assert notification.state == Notification.State.SENT
    assert notification.sent_at is not None
    assert notification.locked_until is None
    # Sent is sent: a second message for it does nothing.
    assert delivery.notification_deliver(notification_id=notification_id) is None
    assert len(receiver.requests) == 1


@pytest.mark.django_db
def test_500_429_and_timeout_are_retried_with_backoff(
    receiver: HTTPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transports, "HTTP_TIMEOUT", 0.3)
    receiver.answer(
        Answer(500, b"oops"),
        Answer(429, b"slow down", {"Retry-After": "600"}),
        Answer(200, b"late", delay=1.0),
        Answer(200, b"ok"),
    )
    make_rule(make_channel(url=receiver.url))
    (notification_id,) = notifications_enqueue(activity=created(make_signal()))
    waits = []
    for _ in range(3):
        before = timezone.now()
        assert delivery.notification_deliver(notification_id=notification_id) is not None
        notification = Notification.objects.get(pk=notification_id)
        assert notification.state == Notification.State.PENDING
        waits.append(notification.next_attempt_at - before)
        # Not due yet: neither a message nor the sweep sends it early.
        assert delivery.notification_deliver(notification_id=notification_id) is None
        _make_due(notification_id)
    assert timedelta(seconds=30) <= waits[0] < timedelta(seconds=40)
    assert timedelta(seconds=600) <= waits[1] < timedelta(seconds=620)
    assert timedelta(minutes=8) <= waits[2] < timedelta(minutes=10)
    assert delivery.notification_deliver(notification_id=notification_id) is not None
    notification = Notification.objects.get(pk=notification_id)
    assert (notification.state, notification.attempts) == (Notification.State.SENT, 4)
    attempts = list(Delivery.objects.filter(notification_id=notification_id).order_by("attempt"))
    assert [(d.attempt, d.ok, d.temporary, d.status_code) for d in attempts] == [
        (1, False, True, 500),
        (2, False, True, 429),
        (3, False, True, None),
        (4, True, False, 200),
    ]
    assert attempts[0].error == "HTTP 500: oops"
    assert "did not answer" in attempts[2].error


@pytest.mark.django_db
def test_404_fails_at_once(receiver: HTTPReceiver) -> None:
    receiver.answer(Answer(404, b"no_service"))
    make_rule(make_channel(Channel.Kind.SLACK, url=receiver.url))
    (notification_id,) = notifications_enqueue(activity=created(make_signal()))
    delivery.notification_deliver(notification_id=notification_id)
    _make_due(notification_id)
    assert delivery.notification_deliver(notification_id=notification_id) is None
    notification = Notification.objects.get(pk=notification_id)
    assert (notification.state, notification.attempts) == (Notification.State.FAILED, 1)
    assert notification.last_error == "HTTP 404: no_service"
    assert len(receiver.requests) == 1


@pytest.mark.django_db
def test_temporary_failures_give_up_after_the_last_attempt(receiver: HTTPReceiver) -> None:
    receiver.answer(Answer(502, b"bad gateway"))
    make_rule(make_channel(url=receiver.url))
    (notification_id,) = notifications_enqueue(activity=created(make_signal()))
    for _ in range(delivery.MAX_ATTEMPTS + 2):
        delivery.notification_deliver(notification_id=notification_id)
        _make_due(notification_id)
    notification = Notification.objects.get(pk=notification_id)
    assert notification.state == Notification.State.FAILED
    assert notification.attempts == delivery.MAX_ATTEMPTS
    assert notification.last_error.startswith("gave up after 6 attempts: HTTP 502")
    assert len(receiver.requests) == delivery.MAX_ATTEMPTS
    assert Delivery.objects.filter(notification_id=notification_id).count() == 6


@pytest.mark.django_db
def test_the_sweep_sends_what_is_due_and_leaves_the_rest(
    receiver: HTTPReceiver, smtp: SMTPServer
) -> None:
    make_rule(make_channel(url=receiver.url), make_channel(Channel.Kind.EMAIL))
    due = notifications_enqueue(activity=created(make_signal()))
    later = notifications_enqueue(activity=created(make_signal(title="another")))
    Notification.objects.filter(pk__in=later).update(
        next_attempt_at=timezone.now() + timedelta(minutes=5)
    )
    locked = notifications_enqueue(activity=created(make_signal(title="a third")))
    Notification.objects.filter(pk__in=locked).update(
        locked_until=timezone.now() + timedelta(minutes=5)
    )
    assert delivery.notifications_send_due() == 2
    assert set(
        Notification.objects.filter(state=Notification.State.SENT).values_list("pk", flat=True)
    ) == set(due)
    assert len(receiver.requests) == 1
    assert len(smtp.messages) == 1


@pytest.mark.django_db
def test_a_claimed_notification_is_not_claimed_again_until_its_lock_expires() -> None:
    make_rule(make_channel())
    (notification_id,) = notifications_enqueue(activity=created(make_signal()))
    now = timezone.now()
    assert delivery.notification_claim(notification_id=notification_id, now=now) is not None
    assert delivery.notification_claim(notification_id=notification_id, now=now) is None
    later = now + delivery.LOCK_FOR + timedelta(seconds=1)
    # A worker that died mid-send: its claim expires and the attempt counts.
    reclaimed = delivery.notification_claim(notification_id=notification_id, now=later)
    assert reclaimed is not None
    assert reclaimed.attempts == 2


@pytest.mark.django_db
def test_a_test_notification_reaches_the_channel(receiver: HTTPReceiver) -> None:
    channel = make_channel(Channel.Kind.WEBHOOK, url=receiver.url, enabled=False)
    notification = notification_send_test(channel=channel)
    delivery.notification_deliver(notification_id=notification.pk)
    notification.refresh_from_db()
    assert notification.state == Notification.State.SENT
    body = receiver.requests[0].json()
    assert body["event"] == "test"
    assert body["signal"]["id"] is None


@pytest.mark.django_db
def test_a_channel_disabled_after_enqueueing_is_not_sent_to(receiver: HTTPReceiver) -> None:
    channel = make_channel(url=receiver.url)
    make_rule(channel)
    (notification_id,) = notifications_enqueue(activity=created(make_signal()))
    Channel.objects.filter(pk=channel.pk).update(enabled=False)
    delivery.notification_deliver(notification_id=notification_id)
    assert Notification.objects.get(pk=notification_id).state == Notification.State.FAILED
    assert receiver.requests == []


def test_backoff_grows_and_is_bounded() -> None:
    waits = [delivery.backoff(attempt) for attempt in range(1, 8)]
    assert timedelta(seconds=30) <= waits[0] <= timedelta(seconds=33)
    assert timedelta(minutes=2) <= waits[1] <= timedelta(minutes=2.2)
    assert all(wait <= delivery.BACKOFF_MAX * 1.1 for wait in waits)
    assert delivery.backoff(1, retry_after=900) >= timedelta(seconds=900)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_send_each_notification_once(receiver: HTTPReceiver) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: SQLite runs one writer at a time, so nothing can race")
    channels = [make_channel(name=f"hook {i}", url=receiver.url) for i in range(3)]
    make_rule(*channels)
    ids = []
    for i in range(10):
        ids += notifications_enqueue(activity=created(make_signal(title=f"attack {i}")))
    assert len(ids) == 30
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def worker(order: list[int]) -> None:
        try:
            start.wait()
            for notification_id in order:
                delivery.notification_deliver(notification_id=notification_id)
            delivery.notifications_send_due()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    orders = [ids, list(reversed(ids))] * 3
    threads = [threading.Thread(target=worker, args=(order,)) for order in orders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    sent = Counter(int(request.headers["X-ASM-Delivery"]) for request in receiver.requests)
    assert sent == Counter(ids)  # every notification, exactly once
    assert Delivery.objects.count() == 30
    assert set(Notification.objects.values_list("state", "attempts")) == {("sent", 1)}
