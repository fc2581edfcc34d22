"""The outbox: notifications written in the transaction of the signal change they announce.

The signal evaluator calls `notifications_enqueue` (or `notifications_enqueue_many` for the
rows it bulk-creates) inside the transaction that saves a `created` or `severity_changed`
activity row. If that transaction rolls back, no notification exists; once it commits, the
delivery tasks are published (without waiting for the broker), and the beat's sweep sends
whatever a lost message left behind.

Vulnerability matching calls `notifications_enqueue_vulnerabilities` the same way, in its
transaction, with the activity rows of a matching round.
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
from services.models import Service, Vulnerability, VulnerabilityActivity, VulnerabilitySeverity
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


# A vulnerability someone muted or closed stays quiet when its severity rises.
_NOTIFIABLE_STATUSES = (Vulnerability.Status.OPEN, Vulnerability.Status.IN_PROGRESS)


def _vulnerability_severity_matches(
    activity: VulnerabilityActivity, severities: frozenset[str]
) -> bool:
    """A new vulnerability at one of the severities, or one whose severity rose into them
    from below (from a severity the rule already notified about would be a repeat)."""
    if activity.to_value not in severities:
        return False
    if activity.kind == VulnerabilityActivity.Kind.DETECTED:
        return True
    before, after = activity.from_value, activity.to_value
    return (
        activity.kind == VulnerabilityActivity.Kind.SEVERITY_CHANGED
        and before not in severities
        and VulnerabilitySeverity.rank(after) > VulnerabilitySeverity.rank(before)
    )


def _vulnerability_rule_matches(
    criteria: RuleCriteria, vulnerability: Vulnerability, service: str
) -> bool:
    # Attack types and signal rules are about signals: a rule limited to them is too.
    if criteria.rule_types or criteria.rule_ids:
        return False
    if criteria.services and service not in criteria.services:
        return False
    return not criteria.envs or vulnerability.env in criteria.envs


def notifications_enqueue_vulnerabilities(
    *, activities: Sequence[VulnerabilityActivity]
) -> list[int]:
    """Write one notification per matching enabled channel for saved vulnerability activity
    rows: a `detected` row, or a `severity_changed` row that rises into a rule's severities.
    Only enabled rules with `vulnerabilities` set match. Other rows are ignored. Call it
    inside the transaction that saved the rows; returns the ids of the notifications
    written."""
    relevant = [
        activity
        for activity in activities
        if activity.kind
        in (VulnerabilityActivity.Kind.DETECTED, VulnerabilityActivity.Kind.SEVERITY_CHANGED)
    ]
    if not relevant:
        return []
    if any(activity.pk is None for activity in relevant):
        raise ValueError("save the activity rows before enqueueing their notifications")
    rules = [rule for rule in enabled_rules_with_channels() if rule.vulnerabilities]
    if not rules:
        return []
    criteria = {rule.pk: RuleCriteria.of(rule) for rule in rules}
    # A matching round covers a few hundred services: their names in one query.
    services = dict(
        Service.objects.filter(
            pk__in={activity.vulnerability.service_id for activity in relevant}
        ).values_list("pk", "name")
    )
    now = timezone.now()
    rows: list[Notification] = []
    notified: set[int] = set()
    for activity in relevant:
        vulnerability = activity.vulnerability
        if vulnerability.status not in _NOTIFIABLE_STATUSES:
            continue
        channels_done: set[int] = set()
        for rule in rules:
            rule_criteria = criteria[rule.pk]
            if not _vulnerability_severity_matches(activity, rule_criteria.severities):
                continue
            service = services.get(vulnerability.service_id, "")
            if not _vulnerability_rule_matches(rule_criteria, vulnerability, service):
                continue
            channel: Channel
            for channel in rule.channels.all():
                # One message per channel, credited to the first rule (by id) that matched.
                if channel.pk in channels_done:
                    continue
                channels_done.add(channel.pk)
                notified.add(activity.pk)
                rows.append(
                    Notification(
                        channel=channel,
                        rule=rule,
                        vulnerability_id=vulnerability.pk,
                        vulnerability_activity=activity,
                        event=Notification.Event.VULNERABILITY,
                        next_attempt_at=now,
                    )
                )
    if not rows:
        return []
    # A retried matching round that enqueues the same rows again writes nothing new.
    Notification.objects.bulk_create(rows, batch_size=1000, ignore_conflicts=True)
    # The first round after a big import can notify thousands: look them up in chunks.
    activity_ids = sorted(notified)
    ids: list[int] = []
    for start in range(0, len(activity_ids), 2000):
        ids += Notification.objects.filter(
            vulnerability_activity__in=activity_ids[start : start + 2000],
            state=Notification.State.PENDING,
            attempts=0,
        ).values_list("pk", flat=True)
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
