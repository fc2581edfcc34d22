"""The outbox: notifications written in the transaction of the signal change they announce.

The signal evaluator calls `notifications_enqueue` (or `notifications_enqueue_many` for the
rows it bulk-creates) inside the transaction that saves a `created` or `severity_changed`
activity row. If that transaction rolls back, no notification exists; once it commits, the
delivery tasks are published (without waiting for the broker), and the beat's sweep sends
whatever a lost message left behind.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import transaction
from django.utils import timezone

from notifications.dispatch import notifications_dispatch
from notifications.models import Channel, Notification
from notifications.selectors import (
    RuleCriteria,
    enabled_rules_with_channels,
    signal_rule_types,
    types_of_signal,
)
from signals.models import Severity, SignalActivity


def notification_event(activity: SignalActivity) -> str | None:
    """The event an activity row notifies about: a creation, or a rise in severity."""
    if activity.kind == SignalActivity.Kind.CREATED:
        return Notification.Event.CREATED
    if activity.kind == SignalActivity.Kind.SEVERITY_CHANGED:
        before, after = activity.from_value, activity.to_value
        if (
            before in Severity.values
            and after in Severity.values
            and Severity.rank(after) > Severity.rank(before)
        ):
            return Notification.Event.ESCALATED
    return None


def notifications_enqueue(*, activity: SignalActivity) -> list[int]:
    """Write one notification per matching enabled channel for a saved `created` or
    `severity_changed` activity row; any other row is ignored. Call it inside the
    transaction that saved the row. Returns the ids of the notifications written."""
    return notifications_enqueue_many(activities=[activity])


def notifications_enqueue_many(*, activities: Sequence[SignalActivity]) -> list[int]:
    """`notifications_enqueue` for several saved activity rows at once."""
    changes = [(activity, notification_event(activity)) for activity in activities]
    relevant = [(activity, event) for activity, event in changes if event is not None]
    if not relevant:
        return []
    if any(activity.pk is None for activity, _ in relevant):
        raise ValueError("save the activity rows before enqueueing their notifications")
    rules = enabled_rules_with_channels()
    if not rules:
        return []
    criteria = {rule.pk: RuleCriteria.of(rule) for rule in rules}
    types_by_rule = signal_rule_types() if any(c.rule_types for c in criteria.values()) else {}
    now = timezone.now()
    rows: list[Notification] = []
    for activity, event in relevant:
        signal = activity.signal
        severity = activity.to_value if activity.to_value in Severity.values else signal.severity
        types = types_of_signal(signal, types_by_rule)
        channels_done: set[int] = set()
        for rule in rules:
            if not criteria[rule.pk].matches(signal, severity=severity, types=types):
                continue
            channel: Channel
            for channel in rule.channels.all():
                # One message per channel, credited to the first rule (by id) that matched.
                if channel.pk in channels_done:
                    continue
                channels_done.add(channel.pk)
                rows.append(
                    Notification(
                        channel=channel,
                        rule=rule,
                        signal=signal,
                        activity=activity,
                        event=event,
                        next_attempt_at=now,
                    )
                )
    if not rows:
        return []
    # A retried evaluation that enqueues the same change again writes nothing new.
    Notification.objects.bulk_create(rows, ignore_conflicts=True)
    ids = list(
        Notification.objects.filter(
            activity__in=[activity.pk for activity, _ in relevant],
            state=Notification.State.PENDING,
            attempts=0,
        ).values_list("pk", flat=True)
    )
    transaction.on_commit(lambda: notifications_dispatch(ids))
    return ids


def notification_send_test(*, channel: Channel) -> Notification:
    """A test message for a channel, sent by the workers like any other."""
    with transaction.atomic():
        notification = Notification.objects.create(
            channel=channel, event=Notification.Event.TEST, next_attempt_at=timezone.now()
        )
        transaction.on_commit(lambda: notifications_dispatch([notification.pk]))
    return notification
