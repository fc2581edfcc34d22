"""What a notification says, whichever channel carries it: one plain structure built from the
signal (`Message`) or the vulnerability (`VulnerabilityMessage`), which each transport
renders (email templates, Slack blocks, webhook JSON).

Everything here but the severity and the ids comes from attacked requests (routes, user
names), from rules people wrote, from advisory feeds (summaries, aliases, references) or
from tracer telemetry (library names and versions): transports escape it for their format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone

from notifications.models import Notification
from services.models import Vulnerability, VulnerabilityActivity
from services.selectors import safe_references
from services.vulnerabilities import REASON_TEXT
from signals.models import Severity, Signal

TOP_ATTACKERS = 5
TOP_ROUTES = 5
MAX_REFERENCES = 5
MAX_SUMMARY = 500


@dataclass(slots=True)
class Attacker:
    value: str
    count: int


@dataclass(slots=True)
class Message:
    notification_id: int
    event: str  # Notification.Event
    severity: str
    previous_severity: str
    title: str
    signal_id: int | None
    url: str
    rule_id: str
    rule_name: str
    service: str
    env: str
    status: str
    first_seen: datetime | None
    last_seen: datetime | None
    event_count: int
    ips: list[Attacker] = field(default_factory=list)
    users: list[Attacker] = field(default_factory=list)
    routes: list[Attacker] = field(default_factory=list)

    @property
    def headline(self) -> str:
        if self.event == Notification.Event.TEST:
            return "Test notification from ASM Console"
        if self.event == Notification.Event.ESCALATED:
            return f"Signal escalated to {self.severity.upper()}"
        return f"New {self.severity.upper()} signal"

    @property
    def severity_label(self) -> str:
        return Severity(self.severity).label if self.severity in Severity.values else self.severity

    def as_json(self) -> dict[str, Any]:
        """The webhook body: stable field names, documented in docs/notifications.md."""
        return {
            "id": self.notification_id,
            "event": self.event,
            "signal": {
                "id": self.signal_id,
                "url": self.url,
                "title": self.title,
                "severity": self.severity,
                "previous_severity": self.previous_severity or None,
                "status": self.status,
                "rule_id": self.rule_id,
                "rule_name": self.rule_name,
                "service": self.service,
                "env": self.env,
                "first_seen": self.first_seen.isoformat() if self.first_seen else None,
                "last_seen": self.last_seen.isoformat() if self.last_seen else None,
                "event_count": self.event_count,
                "attackers": {
                    "ips": [{"ip": a.value, "count": a.count} for a in self.ips],
                    "users": [{"user": a.value, "count": a.count} for a in self.users],
                },
                "routes": [{"route": r.value, "count": r.count} for r in self.routes],
            },
        }


def _top_people(people: Any) -> list[Attacker]:
    if not isinstance(people, dict):
        return []
    rows = []
    for value, stats in people.items():
        count = stats.get("count", 0) if isinstance(stats, dict) else 0
        rows.append(Attacker(str(value), int(count) if isinstance(count, int) else 0))
    rows.sort(key=lambda row: (-row.count, row.value))
    return rows[:TOP_ATTACKERS]


def _top_routes(routes: Any) -> list[Attacker]:
    if not isinstance(routes, dict):
        return []
    rows = [
        Attacker(str(route), count if isinstance(count, int) else 0)
        for route, count in routes.items()
    ]
    rows.sort(key=lambda row: (-row.count, row.value))
    return rows[:TOP_ROUTES]


def signal_url(signal_id: int) -> str:
    return f"{settings.ASM_BASE_URL}/signals/{signal_id}/"


def message_for(notification: Notification) -> Message:
    signal: Signal | None = notification.signal
    if signal is None:
        return _test_message(notification)
    attackers = signal.attackers if isinstance(signal.attackers, dict) else {}
    activity = notification.activity
    previous = ""
    severity = signal.severity
    if activity is not None and notification.event == Notification.Event.ESCALATED:
        previous, severity = activity.from_value, activity.to_value or signal.severity
    elif activity is not None and activity.to_value in Severity.values:
        severity = activity.to_value
    return Message(
        notification_id=notification.pk,
        event=notification.event,
        severity=severity,
        previous_severity=previous,
        title=signal.title,
        signal_id=signal.pk,
        url=signal_url(signal.pk),
        rule_id=signal.rule_id,
        rule_name=signal.rule_name,
        service=signal.service.name if signal.service else "",
        env=signal.env,
        status=signal.status,
        first_seen=signal.first_seen,
        last_seen=signal.last_seen,
        event_count=signal.event_count,
        ips=_top_people(attackers.get("ips")),
        users=_top_people(attackers.get("users")),
        routes=_top_routes(signal.routes),
    )


def _test_message(notification: Notification) -> Message:
    now = timezone.now()
    return Message(
        notification_id=notification.pk,
        event=Notification.Event.TEST,
        severity=Severity.MEDIUM,
        previous_severity="",
        title="Test notification: this channel works",
        signal_id=None,
        url=f"{settings.ASM_BASE_URL}/notifications/",
        rule_id="test",
        rule_name="Test notification",
        service="example-service",
        env="prod",
        status=Signal.Status.OPEN,
        first_seen=now,
        last_seen=now,
        event_count=0,
        ips=[Attacker("198.51.100.7", 0)],
    )


# --- vulnerabilities ----------------------------------------------------------------------


@dataclass(slots=True)
class VulnerabilityMessage:
    notification_id: int
    event: str  # Notification.Event.VULNERABILITY
    # The activity row notified about: `detected`, or `severity_changed` for a rise.
    change: str
    severity: str
    previous_severity: str
    base_severity: str
    vulnerability_id: int
    url: str
    service: str
    env: str
    ecosystem: str
    library: str
    version: str
    status: str
    advisory_id: str
    aliases: list[str]
    summary: str
    fixed_versions: list[str]
    reachable: bool
    reasons: list[str]
    references: list[str]
    first_detected: datetime | None

    @property
    def headline(self) -> str:
        if self.previous_severity:
            return f"Vulnerability raised to {self.severity.upper()}"
        return f"New {self.severity.upper()} vulnerability"

    @property
    def title(self) -> str:
        where = f"{self.service} ({self.env})" if self.env else self.service
        return f"{self.library} {self.version} on {where}: {self.advisory_id}"

    @property
    def severity_label(self) -> str:
        return self.severity.capitalize()

    def as_json(self) -> dict[str, Any]:
        """The webhook body: stable field names, documented in docs/notifications.md."""
        return {
            "id": self.notification_id,
            "event": self.event,
            "vulnerability": {
                "id": self.vulnerability_id,
                "url": self.url,
                "change": self.change,
                "severity": self.severity,
                "previous_severity": self.previous_severity or None,
                "base_severity": self.base_severity,
                "severity_reasons": self.reasons,
                "status": self.status,
                "service": self.service,
                "env": self.env,
                "ecosystem": self.ecosystem,
                "library": self.library,
                "version": self.version,
                "fixed_versions": self.fixed_versions,
                "reachable": self.reachable,
                "first_detected": self.first_detected.isoformat() if self.first_detected else None,
                "advisory": {
                    "id": self.advisory_id,
                    "aliases": self.aliases,
                    "summary": self.summary,
                    "references": self.references,
                },
            },
        }


def vulnerability_url(vulnerability_id: int) -> str:
    return f"{settings.ASM_BASE_URL}/services/vulnerabilities/{vulnerability_id}/"


def _strings(values: Any) -> list[str]:
    return [str(value) for value in values] if isinstance(values, list) else []


def vulnerability_message_for(notification: Notification) -> VulnerabilityMessage:
    vulnerability: Vulnerability | None = notification.vulnerability
    if vulnerability is None:
        raise ValueError(f"notification {notification.pk} is not about a vulnerability")
    advisory = vulnerability.advisory
    activity: VulnerabilityActivity | None = notification.vulnerability_activity
    change = activity.kind if activity is not None else VulnerabilityActivity.Kind.DETECTED
    severity = vulnerability.severity
    previous = ""
    if activity is not None and activity.to_value:
        severity = activity.to_value
        if change == VulnerabilityActivity.Kind.SEVERITY_CHANGED:
            previous = activity.from_value
    fixed: list[str] = []
    for package in advisory.packages.filter(
        ecosystem=vulnerability.ecosystem, name=vulnerability.library
    ):
        fixed += [v for v in _strings(package.fixed_versions) if v not in fixed]
    summary = " ".join((advisory.summary or advisory.details).split())
    if len(summary) > MAX_SUMMARY:
        summary = summary[: MAX_SUMMARY - 1] + "…"
    return VulnerabilityMessage(
        notification_id=notification.pk,
        event=notification.event,
        change=change,
        severity=severity,
        previous_severity=previous,
        base_severity=vulnerability.base_severity,
        vulnerability_id=vulnerability.pk,
        url=vulnerability_url(vulnerability.pk),
        service=vulnerability.service.name,
        env=vulnerability.env,
        ecosystem=vulnerability.ecosystem,
        library=vulnerability.library,
        version=vulnerability.version,
        status=vulnerability.status,
        advisory_id=advisory.osv_id,
        aliases=_strings(advisory.aliases),
        summary=summary,
        fixed_versions=fixed,
        reachable=vulnerability.reachable,
        reasons=[REASON_TEXT.get(r, str(r)) for r in _strings(vulnerability.severity_reasons)],
        references=[ref["url"] for ref in safe_references(advisory.references)][:MAX_REFERENCES],
        first_detected=vulnerability.first_detected,
    )
