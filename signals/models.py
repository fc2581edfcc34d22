from __future__ import annotations

import ipaddress
from datetime import date, datetime
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import connection, models

if TYPE_CHECKING:
    from traces.models import BusinessLogicEvent, SecurityEvent


class DetectionRule(models.Model):
    """A detection rule's state: custom rules with their definition, and any rule an admin or
    member switched off. Built-in rules are read from the shipped rule file and appear here
    only once their state changes."""

    class Source(models.TextChoices):
        BUILTIN = "builtin", "Built-in"
        CUSTOM = "custom", "Custom"

    rule_id = models.CharField(max_length=100, unique=True)
    source = models.CharField(max_length=8, choices=Source.choices)
    # The rule in Datadog's appsec-event-rules format; custom rules only.
    definition = models.JSONField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["rule_id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(source="builtin", definition__isnull=True)
                | models.Q(source="custom", definition__isnull=False),
                name="signals_detectionrule_definition_iff_custom",
            )
        ]

    def __str__(self) -> str:
        return self.rule_id


class DetectionStats(models.Model):
    """Per-day counters of the console's detection: requests evaluated, time spent, and
    requests that ran past the time budget (whose remaining rules were skipped)."""

    day = models.DateField(unique=True)
    requests = models.BigIntegerField(default=0)
    matches = models.BigIntegerField(default=0)
    budget_overruns = models.BigIntegerField(default=0)
    total_us = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-day"]

    def __str__(self) -> str:
        return f"{self.day}: {self.requests} requests, {self.budget_overruns} overruns"

    @classmethod
    def add(cls, *, day: date, requests: int, matches: int, overruns: int, total_us: int) -> None:
        """Add to a day's counters in one statement, whichever worker writes first."""
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO signals_detectionstats"
                " (day, requests, matches, budget_overruns, total_us)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (day) DO UPDATE SET"
                " requests = signals_detectionstats.requests + excluded.requests,"
                " matches = signals_detectionstats.matches + excluded.matches,"
                " budget_overruns = signals_detectionstats.budget_overruns"
                " + excluded.budget_overruns,"
                " total_us = signals_detectionstats.total_us + excluded.total_us",
                [day, requests, matches, overruns, total_us],
            )


class Severity(models.TextChoices):
    """How fast to react: INFO and LOW weekly, MEDIUM and HIGH daily, CRITICAL at once."""

    INFO = "info", "Info"
    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"
    CRITICAL = "critical", "Critical"

    @classmethod
    def rank(cls, value: str) -> int:
        """0 for INFO up to 4 for CRITICAL, to compare and sort severities."""
        return list(cls.values).index(value)


class SignalRule(models.Model):
    """A signal rule's state: custom rules with their definition, and the built-in rules a user
    switched off or tuned. Built-in rules are read from `signals/rules/signal_rules.json` and
    appear here only once their state changes (as detection rules do)."""

    class Source(models.TextChoices):
        BUILTIN = "builtin", "Built-in"
        CUSTOM = "custom", "Custom"

    rule_id = models.CharField(max_length=100, unique=True)
    source = models.CharField(max_length=8, choices=Source.choices)
    # The whole rule (see signals/signal_rules.py): a custom rule's, or a tuned built-in's.
    # Null for a built-in rule that was only switched off or on.
    definition = models.JSONField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["rule_id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(source="builtin") | models.Q(definition__isnull=False),
                name="signals_signalrule_custom_has_definition",
            )
        ]

    def __str__(self) -> str:
        return self.rule_id


class Signal(models.Model):
    """An attack that needs attention: what one signal rule found for one group (a service, an
    attacker...), updated while the attack goes on."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        UNDER_REVIEW = "under_review", "Under review"
        ARCHIVED = "archived", "Archived"

    class ArchiveReason(models.TextChoices):
        FALSE_POSITIVE = "false_positive", "False positive"
        RESOLVED = "resolved", "Resolved"
        ACCEPTED_RISK = "accepted_risk", "Accepted risk"
        NO_ACTION_NEEDED = "no_action_needed", "No action needed"

    rule_id = models.CharField(max_length=100)
    rule_name = models.CharField(max_length=200)
    title = models.CharField(max_length=300)
    severity = models.CharField(max_length=8, choices=Severity.choices)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.OPEN)
    archive_reason = models.CharField(max_length=16, choices=ArchiveReason.choices, blank=True)
    archived_at = models.DateTimeField(null=True, blank=True)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="assigned_signals",
    )
    # The values of the rule's group-by fields ({"service": ..., "client_ip": ...}), and the
    # same as one canonical string, which the one-open-signal constraint compares.
    group = models.JSONField(default=dict)
    group_key = models.CharField(max_length=500)
    service = models.ForeignKey(
        "services.Service", null=True, blank=True, on_delete=models.CASCADE, related_name="signals"
    )
    env = models.CharField(max_length=100, blank=True)
    # {"ips": {ip: {"count", "first_seen", "last_seen"}}, "users": {...}}, the most active kept.
    attackers = models.JSONField(default=dict)
    # {route: count}, the most targeted kept.
    routes = models.JSONField(default=dict)
    # The most recent events' [trace_id, span_id], newest first.
    traces = models.JSONField(default=list)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    event_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-last_seen", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["rule_id", "group_key"],
                condition=~models.Q(status="archived"),
                name="signals_signal_one_open_per_group",
            ),
            models.CheckConstraint(
                condition=(
                    models.Q(status="archived")
                    & ~models.Q(archive_reason="")
                    & models.Q(archived_at__isnull=False)
                )
                | (
                    ~models.Q(status="archived")
                    & models.Q(archive_reason="")
                    & models.Q(archived_at__isnull=True)
                ),
                name="signals_signal_archive_reason_iff_archived",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "severity", "last_seen"], name="signals_signal_triage"),
            models.Index(fields=["rule_id", "group_key", "status"], name="signals_signal_group"),
            models.Index(fields=["service", "status"], name="signals_signal_service"),
        ]

    def __str__(self) -> str:
        return f"[{self.severity}] {self.title}"


class ActivityRecord(models.Model):
    """What every activity row holds: who (null for the console itself), when, from, to, why.
    Signals and vulnerabilities each keep their own table of them."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Kept as text so the record survives the deletion of the account.
    actor_name = models.CharField(max_length=150, blank=True)
    from_value = models.CharField(max_length=200, blank=True)
    to_value = models.CharField(max_length=200, blank=True)
    # The reason given, or the comment.
    message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True
        ordering = ["created_at", "id"]

    @staticmethod
    def name_of(actor: Any) -> str:
        """The name a row keeps; empty for what the console did itself."""
        return actor.get_username() if actor is not None else ""


class SignalActivity(ActivityRecord):
    """One change to a signal: the audit trail, the digest's source and the notification
    trigger. Append-only; the actor is null for what the console did itself."""

    class Kind(models.TextChoices):
        CREATED = "created", "Created"
        SEVERITY_CHANGED = "severity_changed", "Severity changed"
        STATUS_CHANGED = "status_changed", "Status changed"
        REOPENED = "reopened", "Reopened"
        ASSIGNED = "assigned", "Assigned"
        COMMENTED = "commented", "Commented"
        PASSLISTED = "passlisted", "Added to the passlist"
        UNPASSLISTED = "unpasslisted", "Passlist entry ended"
        BLOCKED = "blocked", "Attacker blocked"
        UNBLOCKED = "unblocked", "Attacker unblocked"

    signal = models.ForeignKey(Signal, on_delete=models.CASCADE, related_name="activity")
    kind = models.CharField(max_length=16, choices=Kind.choices)

    class Meta(ActivityRecord.Meta):
        indexes = [models.Index(fields=["created_at"], name="signals_activity_created")]

    def __str__(self) -> str:
        return f"{self.signal_id} {self.kind} {self.from_value} -> {self.to_value}"


class PassFilter(models.Model):
    """A passlist entry (exclusion filter): events it matches are kept, marked excluded, and
    stop counting toward signals. Every scope set must match; an empty scope matches all."""

    service = models.CharField(max_length=200, blank=True)
    env = models.CharField(max_length=100, blank=True)
    # A glob (`/api/*/health`) over the event's route and its URL's path.
    route = models.CharField(max_length=500, blank=True)
    # A parameter's key path as the event shows it, dot-joined (`user.name`, `q`).
    parameter = models.CharField(max_length=300, blank=True)
    rule_id = models.CharField(max_length=100, blank=True)
    rule_type = models.CharField(max_length=64, blank=True)
    # An IP address or a network (CIDR).
    ip = models.CharField(max_length=64, blank=True)
    user = models.CharField(max_length=200, blank=True)
    reason = models.TextField()
    expires_at = models.DateTimeField(null=True, blank=True)
    signal = models.ForeignKey(
        Signal, null=True, blank=True, on_delete=models.SET_NULL, related_name="pass_filters"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # A filter with no scope would silence everything.
            models.CheckConstraint(
                condition=~models.Q(
                    service="",
                    env="",
                    route="",
                    parameter="",
                    rule_id="",
                    rule_type="",
                    ip="",
                    user="",
                ),
                name="signals_passfilter_has_scope",
            )
        ]

    def __str__(self) -> str:
        return f"pass filter {self.pk}"

    @classmethod
    def active(cls, *, now: datetime) -> models.QuerySet[PassFilter]:
        return cls.objects.filter(models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now))

    def matches(self, event: SecurityEvent | BusinessLogicEvent) -> bool:
        """Whether every scope this filter sets matches the event. Scopes a business-logic
        event has no value for (route, parameter, rule) never match it."""
        from traces.models import SecurityEvent

        if self.service and event.service.name != self.service:
            return False
        if self.env and event.env != self.env:
            return False
        if self.ip and not _ip_in(event.client_ip, self.ip):
            return False
        if not isinstance(event, SecurityEvent):
            users = {event.user_id, event.user_login}
            return not (self.user and self.user not in users) and not (
                self.route or self.parameter or self.rule_id or self.rule_type
            )
        if self.user and event.user != self.user:
            return False
        if self.rule_id and event.rule_id != self.rule_id:
            return False
        if self.rule_type and event.rule_type != self.rule_type:
            return False
        if self.route and not (
            fnmatchcase(event.route, self.route)
            or fnmatchcase(urlsplit(event.url).path if event.url else "", self.route)
        ):
            return False
        # `q` matches the key path `q.0` (a query parameter's first value) and `user` matches
        # `user.name`: a scope names a parameter and everything under it.
        return not self.parameter or any(
            fnmatchcase(prefix, self.parameter)
            for parameter in event.parameters
            for prefix in _key_path_prefixes(parameter.get("key_path"))
        )


def key_path_text(key_path: object) -> str:
    """A parameter's key path as people write it: `user.name`, `items.0`."""
    if not isinstance(key_path, list):
        return ""
    return ".".join(str(key) for key in key_path)


def _key_path_prefixes(key_path: object) -> list[str]:
    if not isinstance(key_path, list):
        return []
    keys = [str(key) for key in key_path]
    return [".".join(keys[: i + 1]) for i in range(len(keys))]


def _ip_in(address: str | None, network: str) -> bool:
    if not address:
        return False
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(network, strict=False)
    except ValueError:
        return False


class DenylistEntry(models.Model):
    """An IP, a network or a user that tracers block, served to them over remote
    configuration (`ASM_DATA`). Expired entries are no longer served."""

    class Kind(models.TextChoices):
        IP = "ip", "IP address or network"
        USER = "user", "User"

    kind = models.CharField(max_length=4, choices=Kind.choices)
    # An IP address or a network (CIDR) for `ip`, a user id for `user`.
    value = models.CharField(max_length=200)
    reason = models.TextField()
    expires_at = models.DateTimeField(null=True, blank=True)
    signal = models.ForeignKey(
        Signal, null=True, blank=True, on_delete=models.SET_NULL, related_name="denylist_entries"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "value"], name="signals_denylist_unique")
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.value}"
