"""The weekly digest: what it says (`digest_build`), when it goes out (`digest_due_send`, run by
Celery beat every few minutes) and the subscription a user manages in their settings.

A digest covers the week that ends at the subscriber's chosen weekday and hour, in their time
zone, and starts at the same weekday and hour a week earlier: consecutive digests cover
consecutive weeks, and a digest sent late still covers the same week.
"""

from __future__ import annotations

import logging
import smtplib
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.db.models import Count, Max, Q, QuerySet, Value
from django.db.models.functions import Concat
from django.template.defaultfilters import pluralize
from django.template.loader import render_to_string
from django.urls import reverse

from accounts.models import User
from notifications.models import DigestSubscription
from signals.models import Severity, Signal, SignalActivity
from traces.models import SecurityEvent

logger = logging.getLogger(__name__)

WEEK = timedelta(days=7)
# Rows per table: a digest is read in a minute, the console has the rest.
TOP = 10
TOP_SERVICES = 20
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


# --- Time zones and the schedule -------------------------------------------------------------


def timezone_names() -> list[str]:
    """The IANA names a subscriber may pick, sorted."""
    return sorted(available_timezones())


def timezone_validate(name: str) -> ZoneInfo:
    # Only the listed names: ZoneInfo() would also open other files under the zoneinfo
    # directories ("posix/...", "right/...") that are not zones people pick.
    if name not in available_timezones():
        raise ValidationError({"timezone": f"{name!r} is not an IANA time zone name."})
    return ZoneInfo(name)


def _zone(subscription: DigestSubscription) -> ZoneInfo:
    try:
        return timezone_validate(subscription.timezone)
    except (ValidationError, ZoneInfoNotFoundError):
        # A name the system's zone database no longer knows: UTC rather than no digest.
        return ZoneInfo("UTC")


def _monday(moment: datetime) -> date:
    return moment.date() - timedelta(days=moment.weekday())


def _moment_in_week(subscription: DigestSubscription, monday: date, zone: ZoneInfo) -> datetime:
    """The subscriber's weekday and hour in the week of `monday`, in their zone. Aware
    datetimes with a ZoneInfo do wall-clock arithmetic, so "a week earlier" keeps the hour
    across a daylight-saving change."""
    day = monday + timedelta(days=subscription.weekday)
    return datetime.combine(day, time(hour=subscription.hour), tzinfo=zone)


@dataclass(frozen=True)
class DigestWeek:
    """One digest's week: from `start` to `end` (the send moment), in the subscriber's zone;
    `monday` is what `DigestSubscription.last_week_sent` records once it went out."""

    start: datetime
    end: datetime
    monday: date


def _week_ending(moment: datetime) -> DigestWeek:
    return DigestWeek(start=moment - WEEK, end=moment, monday=_monday(moment))


def digest_week_due(*, subscription: DigestSubscription, now: datetime) -> DigestWeek | None:
    """This week's digest if its moment has come and it has not gone out yet, else None."""
    zone = _zone(subscription)
    monday = _monday(now.astimezone(zone))
    moment = _moment_in_week(subscription, monday, zone)
    if now < moment:
        return None
    if subscription.last_week_sent is not None and subscription.last_week_sent >= monday:
        return None
    return _week_ending(moment)


def digest_week_next(*, subscription: DigestSubscription, now: datetime) -> DigestWeek:
    """The week the subscriber's next digest covers: this week's if it is still to go out
    (now, or later this week), else next week's."""
    due = digest_week_due(subscription=subscription, now=now)
    if due is not None:
        return due
    zone = _zone(subscription)
    monday = _monday(now.astimezone(zone))
    moment = _moment_in_week(subscription, monday, zone)
    if now >= moment:
        moment = _moment_in_week(subscription, monday + WEEK, zone)
    return _week_ending(moment)


# --- What a digest says ------------------------------------------------------------------------


def _console_url(name: str, params: dict[str, Any] | None = None, **kwargs: Any) -> str:
    """An absolute link into the console. Paths and parameters are our own ids and choices,
    never a value that came from a trace."""
    url = settings.ASM_BASE_URL + reverse(name, kwargs=kwargs or None)
    return f"{url}?{urlencode(params)}" if params else url


def _signal_url(signal_id: int) -> str:
    return _console_url("signals:detail", pk=signal_id)


@dataclass(frozen=True)
class ServiceRow:
    service_id: int
    name: str
    env: str
    requests: int
    previous: int
    url: str

    @property
    def change(self) -> int:
        return self.requests - self.previous

    @property
    def change_percent(self) -> int | None:
        """The change in percent of the week before; None when that week had none."""
        if not self.previous:
            return None
        return round(self.change * 100 / self.previous)


@dataclass(frozen=True)
class RouteRow:
    service_name: str
    route: str
    requests: int
    url: str


@dataclass(frozen=True)
class AttackerRow:
    client_ip: str
    requests: int
    services: int
    blocked: int
    last_seen: datetime
    url: str


@dataclass
class SeverityRow:
    severity: str
    label: str
    new: int = 0
    escalated: int = 0
    archived: int = 0
    # Open or under review when the digest was built.
    open: int = 0
    url: str = ""

    @property
    def has_activity(self) -> bool:
        return bool(self.new or self.escalated or self.archived or self.open)


@dataclass(frozen=True)
class SignalRow:
    signal_id: int
    title: str
    severity: str
    severity_label: str
    # "new", "escalated" or "archived", the first that applies this week.
    change: str
    url: str


@dataclass(frozen=True)
class VulnerabilityRow:
    """A vulnerability first detected in the week (issue 8 provides them)."""

    title: str
    severity: str
    service_name: str
    library: str
    version: str
    url: str


@dataclass
class Digest:
    user: User
    week: DigestWeek
    timezone: str
    built_at: datetime
    requests: int
    previous_requests: int
    attackers: int
    services: list[ServiceRow]
    # How many more services had suspicious requests than the table shows.
    services_more: int
    routes: list[RouteRow]
    top_attackers: list[AttackerRow]
    severities: list[SeverityRow]
    signals: list[SignalRow]
    vulnerabilities: list[VulnerabilityRow] = field(default_factory=list)
    console_url: str = ""
    requests_url: str = ""
    attackers_url: str = ""
    signals_url: str = ""
    vulnerabilities_url: str = ""
    settings_url: str = ""

    @property
    def change(self) -> int:
        return self.requests - self.previous_requests

    @property
    def signal_changes(self) -> dict[str, int]:
        return {
            "new": sum(row.new for row in self.severities),
            "escalated": sum(row.escalated for row in self.severities),
            "archived": sum(row.archived for row in self.severities),
        }

    @property
    def period(self) -> str:
        """The week as the subscriber reads it, in their zone."""
        start, end = self.week.start, self.week.end
        return f"{start:%a %d %b %Y %H:%M} to {end:%a %d %b %Y %H:%M} ({self.timezone})"


# Trace values are shown cut short, on one line: in the text email a newline in a route could
# otherwise forge a line of its own.
MAX_SHOWN = 200
_CONTROL = dict.fromkeys([*range(32), 127, 0x2028, 0x2029], " ")


def _shown(value: object) -> str:
    text = str(value).translate(_CONTROL)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "\u2026"


def _request_count() -> Count:
    # A suspicious request is one (trace, span) however many rules matched in it.
    return Count(Concat("trace_id", Value(":"), "span_id"), distinct=True)


def _events(start: datetime, end: datetime) -> QuerySet[SecurityEvent]:
    # Events a passlist entry excluded are false positives by someone's judgement: a request
    # counts when at least one of its events still stands.
    return SecurityEvent.objects.filter(
        detected_at__gte=start, detected_at__lt=end, excluded_by__isnull=True
    )


def _service_rows(
    this_week: QuerySet[SecurityEvent], last_week: QuerySet[SecurityEvent]
) -> tuple[list[ServiceRow], int]:
    fields = ("service_id", "service__name", "service__env")
    current = {
        row["service_id"]: row
        for row in this_week.values(*fields).annotate(requests=_request_count()).order_by()
    }
    previous = {
        row["service_id"]: row
        for row in last_week.values(*fields).annotate(requests=_request_count()).order_by()
    }
    rows = []
    for service_id in current.keys() | previous.keys():
        row = current.get(service_id) or previous[service_id]
        rows.append(
            ServiceRow(
                service_id=service_id,
                name=_shown(row["service__name"]),
                env=_shown(row["service__env"]),
                requests=current[service_id]["requests"] if service_id in current else 0,
                previous=previous[service_id]["requests"] if service_id in previous else 0,
                url=_console_url(
                    "traces:suspicious_requests", {"service": service_id, "window": "7d"}
                ),
            )
        )
    rows.sort(key=lambda row: (-row.requests, -row.previous, row.name, row.env, row.service_id))
    return rows[:TOP_SERVICES], max(0, len(rows) - TOP_SERVICES)


def _route_rows(events: QuerySet[SecurityEvent]) -> list[RouteRow]:
    return [
        RouteRow(
            service_name=_shown(row["service__name"]),
            route=_shown(row["route"]),
            requests=row["requests"],
            url=_console_url(
                "traces:suspicious_requests", {"service": row["service_id"], "window": "7d"}
            ),
        )
        for row in events.exclude(route="")
        .values("service_id", "service__name", "route")
        .annotate(requests=_request_count())
        .order_by("-requests", "service__name", "route")[:TOP]
    ]


def _attacker_rows(events: QuerySet[SecurityEvent]) -> list[AttackerRow]:
    # The attackers page, not a link built from the IP: a link carries no trace value.
    url = _console_url("traces:attackers", {"window": "7d"})
    return [
        AttackerRow(
            client_ip=str(row["client_ip"]),
            requests=row["requests"],
            services=row["services"],
            blocked=row["blocked"],
            last_seen=row["last"],
            url=url,
        )
        for row in events.exclude(client_ip=None)
        .values("client_ip")
        .annotate(
            requests=_request_count(),
            services=Count("service_id", distinct=True),
            blocked=Count(
                Concat("trace_id", Value(":"), "span_id"), filter=Q(blocked=True), distinct=True
            ),
            last=Max("detected_at"),
        )
        .order_by("-requests", "client_ip")[:TOP]
    ]


def _is_archiving(kind: str, from_value: str, to_value: str) -> bool:
    # Triage writes an archived status as "archived:<reason>"; archiving again for another
    # reason is a change of reason, not another archiving.
    return (
        kind == SignalActivity.Kind.STATUS_CHANGED
        and to_value.startswith(Signal.Status.ARCHIVED)
        and not from_value.startswith(Signal.Status.ARCHIVED)
    )


def _is_escalation(kind: str, from_value: str, to_value: str) -> bool:
    if kind != SignalActivity.Kind.SEVERITY_CHANGED:
        return False
    try:
        return Severity.rank(to_value) > Severity.rank(from_value)
    except ValueError:
        return False


def _signal_sections(start: datetime, end: datetime) -> tuple[list[SeverityRow], list[SignalRow]]:
    """Signals by their severity now, and what happened to them in the week, from the
    activity rows: created, escalated (severity raised), archived. A signal counts once per
    change however many rows it has."""
    rows = {
        value: SeverityRow(
            severity=value,
            label=label,
            url=_console_url("signals:list", {"severity": value}),
        )
        for value, label in reversed(Severity.choices)
    }
    # For each change, the signals it happened to and their severity now.
    changes: dict[str, dict[int, str]] = {"new": {}, "escalated": {}, "archived": {}}
    activity = (
        SignalActivity.objects.filter(
            created_at__gte=start,
            created_at__lt=end,
            kind__in=[
                SignalActivity.Kind.CREATED,
                SignalActivity.Kind.SEVERITY_CHANGED,
                SignalActivity.Kind.STATUS_CHANGED,
            ],
        )
        .values_list("signal_id", "kind", "from_value", "to_value", "signal__severity")
        .order_by("created_at", "id")
    )
    for signal_id, kind, from_value, to_value, severity in activity:
        if kind == SignalActivity.Kind.CREATED:
            change = "new"
        elif _is_escalation(kind, from_value, to_value):
            change = "escalated"
        elif _is_archiving(kind, from_value, to_value):
            change = "archived"
        else:
            continue
        changes[change][signal_id] = severity
    for change, severities in changes.items():
        for severity in severities.values():
            if severity in rows:
                setattr(rows[severity], change, getattr(rows[severity], change) + 1)
    for row in (
        Signal.objects.exclude(status=Signal.Status.ARCHIVED)
        .values("severity")
        .annotate(n=Count("id"))
        .order_by()
    ):
        if row["severity"] in rows:
            rows[row["severity"]].open = row["n"]

    # The signals worth a line: new and escalated ones first, most severe first.
    first_change: dict[int, str] = {}
    for change in ("new", "escalated", "archived"):
        for signal_id in changes[change]:
            first_change.setdefault(signal_id, change)
    order = {"new": 0, "escalated": 1, "archived": 2}
    listed = sorted(
        Signal.objects.filter(pk__in=first_change).only("pk", "title", "severity"),
        key=lambda s: (order[first_change[s.pk]], -Severity.rank(s.severity), -s.pk),
    )[:TOP]
    return [row for row in rows.values() if row.has_activity], [
        SignalRow(
            signal_id=signal.pk,
            title=_shown(signal.title),
            severity=signal.severity,
            severity_label=signal.get_severity_display(),
            change=first_change[signal.pk],
            url=_signal_url(signal.pk),
        )
        for signal in listed
    ]


def digest_vulnerabilities(*, start: datetime, end: datetime) -> list[VulnerabilityRow]:
    """Vulnerabilities first detected in the week and still open or in progress, most severe
    first."""
    from services.models import Vulnerability, VulnerabilitySeverity

    found = (
        Vulnerability.objects.filter(first_detected__gte=start, first_detected__lt=end)
        .filter(status__in=[Vulnerability.Status.OPEN, Vulnerability.Status.IN_PROGRESS])
        .select_related("service", "advisory")
    )
    ranked = sorted(
        found[:500],
        key=lambda v: (-VulnerabilitySeverity.rank(v.severity), v.service.name, v.library),
    )
    return [
        VulnerabilityRow(
            title=_shown(v.advisory.summary or v.advisory.osv_id),
            severity=v.severity,
            service_name=_shown(v.service.name),
            library=_shown(v.library),
            version=_shown(v.version),
            url=_console_url("services:vulnerability", pk=v.pk),
        )
        for v in ranked[:TOP]
    ]


def digest_build(*, user: User, week_start: datetime, week_end: datetime, now: datetime) -> Digest:
    """The digest of the week from `week_start` to `week_end` (aware datetimes in the
    subscriber's zone), compared with the same span a week earlier. `now` dates the signals
    still open. A fixed number of aggregate queries whatever the data."""
    previous_start = week_start - WEEK
    this_week = _events(week_start, week_end)
    last_week = _events(previous_start, week_start)
    totals = this_week.aggregate(
        requests=_request_count(), attackers=Count("client_ip", distinct=True)
    )
    previous_requests = last_week.aggregate(requests=_request_count())["requests"]
    services, services_more = _service_rows(this_week, last_week)
    severities, signals = _signal_sections(week_start, week_end)
    zone = week_end.tzinfo
    return Digest(
        user=user,
        week=DigestWeek(start=week_start, end=week_end, monday=_monday(week_end)),
        timezone=getattr(zone, "key", None) or str(zone),
        built_at=now,
        requests=totals["requests"],
        previous_requests=previous_requests,
        attackers=totals["attackers"],
        services=services,
        services_more=services_more,
        routes=_route_rows(this_week),
        top_attackers=_attacker_rows(this_week),
        severities=severities,
        signals=signals,
        vulnerabilities=digest_vulnerabilities(start=week_start, end=week_end),
        console_url=_console_url("summary", {"window": "7d"}),
        requests_url=_console_url("traces:suspicious_requests", {"window": "7d"}),
        attackers_url=_console_url("traces:attackers", {"window": "7d"}),
        signals_url=_console_url("signals:list"),
        vulnerabilities_url=_console_url("services:vulnerabilities"),
        settings_url=_console_url("notifications:digest"),
    )


@dataclass(frozen=True)
class RenderedDigest:
    subject: str
    text: str
    html: str


def digest_render(*, digest: Digest) -> RenderedDigest:
    context = {"digest": digest}
    # The subject holds numbers and dates only: nothing from a trace reaches a header.
    requests, new = digest.requests, digest.signal_changes["new"]
    subject = (
        f"Weekly security digest: {requests} suspicious request{pluralize(requests)}, "
        f"{new} new signal{pluralize(new)} (week to {digest.week.end:%d %b %Y})"
    )
    return RenderedDigest(
        subject=subject,
        text=render_to_string("notifications/digest_email.txt", context),
        html=render_to_string("notifications/digest_email.html", context),
    )


# --- Sending -----------------------------------------------------------------------------------


def _claim(subscription: DigestSubscription, week: DigestWeek, now: datetime) -> bool:
    """Take this week's digest for this worker: one conditional UPDATE that only matches while
    `last_week_sent` still holds what we read. Two workers, or a scheduler that fired twice,
    read the same old value; the database lets one UPDATE match, and the other finds the row
    changed (PostgreSQL re-checks the condition once the first commits)."""
    old = subscription.last_week_sent
    read = Q(last_week_sent=old) if old is not None else Q(last_week_sent__isnull=True)
    claimed = DigestSubscription.objects.filter(read, pk=subscription.pk, enabled=True).update(
        last_week_sent=week.monday, last_sent_at=now
    )
    return claimed == 1


def _release(subscription: DigestSubscription, week: DigestWeek, now: datetime) -> None:
    """Give the week back after a failed send, so the next run tries again; only if the claim
    is still ours."""
    DigestSubscription.objects.filter(
        pk=subscription.pk, last_week_sent=week.monday, last_sent_at=now
    ).update(last_week_sent=subscription.last_week_sent, last_sent_at=subscription.last_sent_at)


def digest_send(*, user: User, week: DigestWeek, now: datetime) -> None:
    """Build and email one digest (no claim: `digest_due_send` claims first)."""
    digest = digest_build(user=user, week_start=week.start, week_end=week.end, now=now)
    rendered = digest_render(digest=digest)
    message = EmailMultiAlternatives(
        subject=rendered.subject,
        body=rendered.text,
        to=[user.email],
        headers={"List-Unsubscribe": f"<{digest.settings_url}>"},
    )
    message.attach_alternative(rendered.html, "text/html")
    message.send()


def digest_due_send(*, now: datetime) -> int:
    """Send every digest whose moment has come this week and that has not gone out; return how
    many went out. Safe to run as often and in as many workers as you like: each subscriber
    gets one digest per week."""
    sent = 0
    subscriptions = (
        DigestSubscription.objects.filter(enabled=True, user__is_active=True)
        .exclude(user__email="")
        .select_related("user")
        .order_by("pk")
    )
    for subscription in subscriptions:
        week = digest_week_due(subscription=subscription, now=now)
        if week is None or not _claim(subscription, week, now):
            continue
        # Claimed before sending: a worker that dies between the two loses this week's digest
        # rather than sending it twice.
        try:
            digest_send(user=subscription.user, week=week, now=now)
        except smtplib.SMTPRecipientsRefused:
            # The server refuses the address: trying again every run would not help.
            logger.warning("digest for user %s refused by the mail server", subscription.user_id)
        except (smtplib.SMTPException, OSError):
            logger.exception("digest for user %s not sent; retrying later", subscription.user_id)
            _release(subscription, week, now)
        except BaseException:
            _release(subscription, week, now)
            raise
        else:
            sent += 1
    return sent


# --- The subscription ------------------------------------------------------------------------


def digest_subscription_get(*, user: User) -> DigestSubscription | None:
    return DigestSubscription.objects.filter(user=user).first()


def digest_subscription_save(
    *, user: User, enabled: bool, weekday: int, hour: int, timezone: str, now: datetime
) -> DigestSubscription:
    """Subscribe, unsubscribe or change the schedule. Someone who subscribes after this week's
    moment starts next week, rather than receiving a digest the minute they subscribe."""
    timezone_validate(timezone)
    if not 0 <= weekday <= 6:
        raise ValidationError({"weekday": "A day from Monday (0) to Sunday (6)."})
    if not 0 <= hour <= 23:
        raise ValidationError({"hour": "An hour from 0 to 23."})
    if enabled and not user.email:
        raise ValidationError({"enabled": "Your account has no email address to send it to."})
    with transaction.atomic():
        # get_or_create: a double-submitted first subscription makes one row, not an error.
        subscription, _ = DigestSubscription.objects.select_for_update().get_or_create(
            user=user, defaults={"enabled": False}
        )
        starting = enabled and not subscription.enabled
        subscription.enabled = enabled
        subscription.weekday = weekday
        subscription.hour = hour
        subscription.timezone = timezone
        if starting:
            zone = ZoneInfo(timezone)
            monday = _monday(now.astimezone(zone))
            if now >= _moment_in_week(subscription, monday, zone):
                # Marks this week as needing no digest; last_sent_at still says none went out.
                subscription.last_week_sent = max(subscription.last_week_sent or monday, monday)
        subscription.save()
    return subscription
