"""Read queries: which rules match a signal, the rule preview, channels and the delivery log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Prefetch, QuerySet
from django.utils import timezone

from notifications.models import Channel, Delivery, Notification, NotificationRule
from signals.models import Signal

PREVIEW_WINDOW = timedelta(days=7)
PREVIEW_LIMIT = 50


@dataclass(frozen=True, slots=True)
class RuleCriteria:
    """What a notification rule matches; an empty list matches everything of its kind."""

    severities: frozenset[str]
    rule_types: frozenset[str]
    rule_ids: frozenset[str]
    services: frozenset[str]
    envs: frozenset[str]

    @classmethod
    def of(cls, rule: NotificationRule) -> RuleCriteria:
        return cls.from_lists(
            severities=rule.severities,
            rule_types=rule.rule_types,
            rule_ids=rule.rule_ids,
            services=rule.services,
            envs=rule.envs,
        )

    @classmethod
    def from_lists(cls, **lists: Any) -> RuleCriteria:
        def values(name: str) -> frozenset[str]:
            raw = lists.get(name) or []
            return frozenset(str(item) for item in raw) if isinstance(raw, list) else frozenset()

        return cls(
            values("severities"),
            values("rule_types"),
            values("rule_ids"),
            values("services"),
            values("envs"),
        )

    def matches(self, signal: Signal, *, severity: str, types: frozenset[str]) -> bool:
        # No severity selected matches nothing: a rule is about some severities.
        if severity not in self.severities:
            return False
        if self.rule_ids and signal.rule_id not in self.rule_ids:
            return False
        if self.rule_types and not (types & self.rule_types):
            return False
        service = signal.service.name if signal.service_id and signal.service else ""
        if self.services and service not in self.services:
            return False
        return not self.envs or signal.env in self.envs


def signal_rule_types() -> dict[str, frozenset[str]]:
    """The attack types (detection rule types: sql_injection, xss...) each signal rule counts,
    from the `rule_type` filters of its queries."""
    from signals.signal_rules import signal_rule_states

    types: dict[str, frozenset[str]] = {}
    for state in signal_rule_states():
        found: set[str] = set()
        for query in state.rule.queries.values():
            found.update(str(value) for value in query.get("rule_type") or [])
        types[state.rule.id] = frozenset(found)
    return types


def types_of_signal(signal: Signal, rule_types: dict[str, frozenset[str]]) -> frozenset[str]:
    # A rule grouping by attack type (`exploit`) says which one this signal is about.
    group = signal.group if isinstance(signal.group, dict) else {}
    if group.get("rule_type"):
        return frozenset({str(group["rule_type"])})
    return rule_types.get(signal.rule_id, frozenset())


def attack_type_choices() -> list[str]:
    return sorted({kind for kinds in signal_rule_types().values() for kind in kinds})


def signal_rule_choices() -> list[tuple[str, str]]:
    from signals.signal_rules import signal_rule_states

    return sorted((state.rule.id, state.rule.name) for state in signal_rule_states())


def enabled_rules_with_channels() -> list[NotificationRule]:
    """Enabled rules, each with its enabled channels prefetched, in a stable order."""
    return list(
        NotificationRule.objects.filter(enabled=True)
        .order_by("pk")
        .prefetch_related(
            Prefetch("channels", queryset=Channel.objects.filter(enabled=True).order_by("pk"))
        )
    )


@dataclass(slots=True)
class Preview:
    signals: list[Signal]
    total: int
    since: datetime


def notification_rule_preview(
    *, criteria: RuleCriteria, now: datetime | None = None, limit: int = PREVIEW_LIMIT
) -> Preview:
    """The signals first seen in the last 7 days that the criteria would have notified about,
    judged at their current severity."""
    now = now or timezone.now()
    since = now - PREVIEW_WINDOW
    candidates = Signal.objects.select_related("service").filter(
        created_at__gte=since, severity__in=criteria.severities
    )
    if criteria.rule_ids:
        candidates = candidates.filter(rule_id__in=criteria.rule_ids)
    if criteria.services:
        candidates = candidates.filter(service__name__in=criteria.services)
    if criteria.envs:
        candidates = candidates.filter(env__in=criteria.envs)
    rule_types = signal_rule_types() if criteria.rule_types else {}
    matched = [
        signal
        for signal in candidates.order_by("-created_at", "-pk").iterator()
        if criteria.matches(
            signal, severity=signal.severity, types=types_of_signal(signal, rule_types)
        )
    ]
    return Preview(signals=matched[:limit], total=len(matched), since=since)


def rule_list() -> QuerySet[NotificationRule]:
    return NotificationRule.objects.prefetch_related("channels").order_by("name", "pk")


def channel_list() -> QuerySet[Channel]:
    return Channel.objects.annotate(rule_count=Count("rules", distinct=True)).order_by("name", "pk")


def delivery_log(
    *, channel_id: int | None = None, state: str | None = None, limit: int = 100
) -> list[Notification]:
    """The latest notifications with their attempts, newest first."""
    notifications = Notification.objects.select_related(
        "channel", "signal", "rule", "vulnerability", "vulnerability__advisory"
    )
    if channel_id is not None:
        notifications = notifications.filter(channel_id=channel_id)
    if state:
        notifications = notifications.filter(state=state)
    return list(
        notifications.order_by("-created_at", "-pk").prefetch_related(
            Prefetch("deliveries", queryset=Delivery.objects.order_by("attempt"))
        )[:limit]
    )
