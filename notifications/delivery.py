"""Sending the outbox: a worker claims a due notification with a conditional UPDATE, sends
it through its channel's transport outside any transaction, and records the attempt.

Claiming sets `locked_until` and counts the attempt in the same statement, whose WHERE
clause only holds for a pending, due, unlocked row: of two workers that race for one
notification, PostgreSQL re-checks the clause for the second after the first commits, and
the second updates nothing. A worker that dies mid-send leaves the lock to expire; the
notification is then tried again (a receiver may see that attempt twice: webhooks carry the
notification id in X-ASM-Delivery so that it can tell).
"""

from __future__ import annotations

import logging
import random
import time
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from notifications.models import Delivery, Notification
from notifications.transports import Result, transport_for

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
# Longer than any one send can take (HTTP: 10 s a hop, 4 hops; SMTP: EMAIL_TIMEOUT).
LOCK_FOR = timedelta(minutes=5)
BACKOFF_FIRST = timedelta(seconds=30)
BACKOFF_FACTOR = 4
BACKOFF_MAX = timedelta(hours=2)
SWEEP_LIMIT = 50
SWEEP_BUDGET_SECONDS = 60.0


def backoff(attempts: int, *, retry_after: int | None = None) -> timedelta:
    """The wait after the `attempts`-th failed attempt: 30 s, 2 min, 8 min, 32 min, 2 h,
    with up to 10% jitter so that the retries of one outage do not arrive together; at least
    what the receiver asked for in Retry-After."""
    delay = min(BACKOFF_FIRST * BACKOFF_FACTOR ** max(attempts - 1, 0), BACKOFF_MAX)
    delay *= 1 + random.random() / 10  # noqa: S311 - jitter, not a secret
    if retry_after is not None:
        delay = max(delay, timedelta(seconds=retry_after))
    return delay


def _due(now: datetime) -> Q:
    return Q(
        state=Notification.State.PENDING,
        next_attempt_at__lte=now,
    ) & (Q(locked_until__isnull=True) | Q(locked_until__lt=now))


def notification_claim(*, notification_id: int, now: datetime) -> Notification | None:
    """Take a due notification for one attempt; None when it is not due or another worker
    has it."""
    claimed = Notification.objects.filter(_due(now), pk=notification_id).update(
        locked_until=now + LOCK_FOR, attempts=F("attempts") + 1
    )
    if not claimed:
        return None
    return Notification.objects.select_related(
        "channel", "signal", "signal__service", "activity"
    ).get(pk=notification_id)


def _send(notification: Notification) -> Result:
    channel = notification.channel
    if not channel.enabled and notification.event != Notification.Event.TEST:
        return Result.permanent_failure("the channel was disabled before this was sent")
    try:
        return transport_for(channel).notify(notification)
    except Exception as exc:
        # A bug in a transport must not wedge the outbox: counted as an attempt, retried
        # a bounded number of times like any temporary failure.
        logger.exception("notification %s: transport failed", notification.pk)
        return Result.temporary_failure(f"internal error: {exc.__class__.__name__}")


def notification_deliver(*, notification_id: int) -> Delivery | None:
    """One attempt at a notification, if it is due and no other worker has it. Never call
    inside a transaction: the claim must commit before the send starts."""
    now = timezone.now()
    notification = notification_claim(notification_id=notification_id, now=now)
    if notification is None:
        return None
    lock = notification.locked_until
    started_at = timezone.now()
    clock = time.monotonic()
    result = _send(notification)
    duration_ms = int((time.monotonic() - clock) * 1000)
    finished = timezone.now()
    attempt = notification.attempts
    update: dict[str, object] = {"locked_until": None, "last_error": result.error}
    if result.ok:
        update |= {"state": Notification.State.SENT, "sent_at": finished}
    elif result.temporary and attempt < MAX_ATTEMPTS:
        update["next_attempt_at"] = finished + backoff(attempt, retry_after=result.retry_after)
    else:
        update["state"] = Notification.State.FAILED
        if result.temporary:
            update["last_error"] = f"gave up after {attempt} attempts: {result.error}"
    with transaction.atomic():
        delivery = Delivery.objects.create(
            notification=notification,
            attempt=attempt,
            started_at=started_at,
            duration_ms=duration_ms,
            ok=result.ok,
            status_code=result.status_code,
            temporary=result.temporary,
            error=result.error,
        )
        # Only while our claim holds: past it, another worker owns the row.
        Notification.objects.filter(pk=notification.pk, locked_until=lock).update(**update)
    if not result.ok:
        logger.info(
            "notification %s attempt %s failed (%s): %s",
            notification.pk,
            attempt,
            "temporary" if result.temporary else "permanent",
            result.error,
        )
    return delivery


def notifications_due(*, now: datetime | None = None, limit: int = SWEEP_LIMIT) -> list[int]:
    now = now or timezone.now()
    return list(
        Notification.objects.filter(_due(now))
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )


def notifications_send_due(
    *, limit: int = SWEEP_LIMIT, budget_seconds: float = SWEEP_BUDGET_SECONDS
) -> int:
    """Send what is due (retries, and what a lost message left), within a time budget so
    that one sweep does not hold a worker for long; the next sweep goes on. Returns the
    number of attempts made."""
    deadline = time.monotonic() + budget_seconds
    attempts = 0
    for notification_id in notifications_due(limit=limit):
        if time.monotonic() > deadline:
            break
        if notification_deliver(notification_id=notification_id) is not None:
            attempts += 1
    return attempts
