"""Read queries: detection rules, signals and what the signal pages show of them, the
passlist and the denylist."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Case, Count, IntegerField, Q, QuerySet, Value, When
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from accounts.models import Role, User
from services.models import Service
from signals import denylist, passlist
from signals.detection.loader import builtin_definitions
from signals.models import (
    DenylistEntry,
    DetectionRule,
    PassFilter,
    Severity,
    Signal,
    SignalActivity,
    SignalRule,
)
from signals.signal_rules import SignalRuleError, builtin_signal_rules, parse_signal_rule
from traces.models import SecurityEvent

HIT_WINDOW = timedelta(days=30)


@dataclass(slots=True)
class RuleRow:
    rule_id: str
    name: str
    type: str
    category: str
    source: str
    enabled: bool
    hits: int
    definition: dict[str, object]


def detection_rule_list(*, type: str | None = None, source: str | None = None) -> list[RuleRow]:
    """Every rule, built-in and custom, with its console hits of the last 30 days."""
    since = timezone.now() - HIT_WINDOW
    hits = dict(
        SecurityEvent.objects.filter(source=SecurityEvent.Source.CONSOLE, detected_at__gte=since)
        .values_list("rule_id")
        .annotate(n=Count("pk"))
        .values_list("rule_id", "n")
    )
    states = {row.rule_id: row for row in DetectionRule.objects.all()}
    rows = []
    definitions = dict(builtin_definitions())
    for row in states.values():
        if row.source == DetectionRule.Source.CUSTOM and isinstance(row.definition, dict):
            definitions[row.rule_id] = row.definition
    for rule_id, definition in definitions.items():
        state = states.get(rule_id)
        tags = definition.get("tags") or {}
        rows.append(
            RuleRow(
                rule_id=rule_id,
                name=str(definition.get("name", "")),
                type=str(tags.get("type", "")),
                category=str(tags.get("category", "attack_attempt")),
                source=state.source if state else DetectionRule.Source.BUILTIN,
                enabled=state.enabled if state else True,
                hits=hits.get(rule_id, 0),
                definition=definition,
            )
        )
    if type:
        rows = [row for row in rows if row.type == type]
    if source:
        rows = [row for row in rows if row.source == source]
    return sorted(rows, key=lambda row: (row.type, row.rule_id))


# --- Signals --------------------------------------------------------------------------------

SIGNALS_PER_PAGE = 50
# The statuses the list shows unless told otherwise: what still needs someone.
ACTIVE_STATUSES = (Signal.Status.OPEN, Signal.Status.UNDER_REVIEW)
STATUS_FILTERS = {
    "active": "Open and under review",
    "open": "Open",
    "under_review": "Under review",
    "archived": "Archived",
    "all": "All",
}
TIMELINE_BARS = 30


@dataclass(slots=True)
class SignalFilters:
    """The signal list's filters as the query string gives them; values that do not parse
    are dropped rather than refused, so a stale bookmark still shows a list."""

    status: str = "active"
    severity: str = ""
    service: str = ""
    rule: str = ""
    assignee: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> SignalFilters:
        status = query.get("status") or "active"
        severity = query.get("severity") or ""
        service = query.get("service") or ""
        assignee = query.get("assignee") or ""
        return cls(
            status=status if status in STATUS_FILTERS else "active",
            severity=severity if severity in Severity.values else "",
            service=service if service.isdigit() and len(service) < 19 else "",
            rule=(query.get("rule") or "")[:100],
            assignee=assignee
            if assignee in ("mine", "none") or (assignee.isdigit() and len(assignee) < 19)
            else "",
        )

    @property
    def narrowed(self) -> bool:
        """Whether anything beyond the default status is set."""
        return bool(self.severity or self.service or self.rule or self.assignee)


def signal_list(*, filters: SignalFilters, user: User | None) -> QuerySet[Signal]:
    """Signals matching the filters, the most severe first, then the most recently seen."""
    signals = Signal.objects.select_related("service", "assignee")
    if filters.status == "active":
        signals = signals.filter(status__in=ACTIVE_STATUSES)
    elif filters.status != "all":
        signals = signals.filter(status=filters.status)
    if filters.severity:
        signals = signals.filter(severity=filters.severity)
    if filters.service:
        signals = signals.filter(service_id=int(filters.service))
    if filters.rule:
        signals = signals.filter(rule_id=filters.rule)
    if filters.assignee == "mine":
        signals = signals.filter(assignee=user) if user else signals.none()
    elif filters.assignee == "none":
        signals = signals.filter(assignee__isnull=True)
    elif filters.assignee:
        signals = signals.filter(assignee_id=int(filters.assignee))
    rank = Case(
        *(When(severity=value, then=Value(Severity.rank(value))) for value in Severity.values),
        default=Value(-1),
        output_field=IntegerField(),
    )
    return signals.annotate(severity_rank=rank).order_by("-severity_rank", "-last_seen", "-id")


@dataclass(slots=True)
class SignalFilterChoices:
    services: list[tuple[int, str, str]]
    rules: list[tuple[str, str]]
    assignees: list[tuple[int, str]]


def triagers() -> QuerySet[User]:
    """The people a signal can be given to: active members and admins."""
    return User.objects.filter(is_active=True, role__in=[Role.MEMBER, Role.ADMIN]).order_by(
        "username"
    )


def signal_filter_choices() -> SignalFilterChoices:
    services = list(
        Service.objects.filter(signals__isnull=False)
        .distinct()
        .order_by("name", "env")
        .values_list("pk", "name", "env")
    )
    rules = sorted(
        set(Signal.objects.order_by().values_list("rule_id", "rule_name").distinct()),
        key=lambda pair: (pair[1].lower(), pair[0]),
    )
    assignees = list(triagers().values_list("pk", "username"))
    return SignalFilterChoices(services=services, rules=rules, assignees=assignees)


def signal_get(*, pk: int) -> Signal | None:
    if not 0 < pk < 2**63:
        return None
    return Signal.objects.select_related("service", "assignee").filter(pk=pk).first()


@dataclass(slots=True)
class AttackerRow:
    value: str
    count: int
    first_seen: datetime | None
    last_seen: datetime | None


def _when(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        return None
    try:
        return parse_datetime(value)
    except ValueError:
        return None


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def signal_attackers(*, signal: Signal, kind: str) -> list[AttackerRow]:
    """A signal's attacker IPs (`ips`) or users (`users`), the most active first."""
    attackers = signal.attackers if isinstance(signal.attackers, dict) else {}
    found = attackers.get(kind)
    rows = []
    for value, figures in (found if isinstance(found, dict) else {}).items():
        figures = figures if isinstance(figures, dict) else {}
        rows.append(
            AttackerRow(
                value=str(value),
                count=_count(figures.get("count")),
                first_seen=_when(figures.get("first_seen")),
                last_seen=_when(figures.get("last_seen")),
            )
        )
    return sorted(rows, key=lambda row: (-row.count, row.value))


def signal_routes(*, signal: Signal) -> list[tuple[str, int]]:
    routes = signal.routes if isinstance(signal.routes, dict) else {}
    return sorted(
        ((str(route), _count(count)) for route, count in routes.items()),
        key=lambda pair: (-pair[1], pair[0]),
    )


@dataclass(slots=True)
class TraceRow:
    trace_id: str
    span_id: str
    event: SecurityEvent | None


def signal_trace_rows(*, signal: Signal, limit: int = 100) -> list[TraceRow]:
    """The signal's linked traces, newest first, each with one of its security events (for
    the time, route and rule) when the event is still stored."""
    pairs = [
        (str(pair[0]), str(pair[1]))
        for pair in (signal.traces if isinstance(signal.traces, list) else [])
        if isinstance(pair, list | tuple) and len(pair) == 2
    ][:limit]
    if not pairs:
        return []
    condition = Q()
    for trace_id, span_id in pairs:
        condition |= Q(trace_id=trace_id, span_id=span_id)
    events: dict[tuple[str, str], SecurityEvent] = {}
    for event in SecurityEvent.objects.filter(condition).order_by("detected_at", "pk"):
        events.setdefault((event.trace_id, event.span_id), event)
    return [
        TraceRow(trace_id, span_id, events.get((trace_id, span_id))) for trace_id, span_id in pairs
    ]


@dataclass(slots=True)
class TimelineBar:
    start: datetime
    end: datetime
    count: int
    x: float
    y: float
    width: float
    height: float


@dataclass(slots=True)
class Timeline:
    bars: list[TimelineBar]
    total: int
    peak: int
    start: datetime
    end: datetime


def signal_timeline(*, signal: Signal, bars: int = TIMELINE_BARS) -> Timeline:
    """The signal's events over its lifetime, first to last seen, in equal intervals: one
    aggregate query whatever the number of events. Coordinates are for a 1000x100 viewBox."""
    start, end = signal.first_seen, signal.last_seen
    if end <= start:
        end = start + timedelta(minutes=1)
    step = (end - start) / bars
    found = passlist.signal_events(signal=signal)
    if found.kind == "security":
        events: QuerySet[Any] = found.security
        column = "detected_at"
    else:
        events = found.business
        column = "occurred_at"
    edges = [start + step * i for i in range(bars)] + [end]
    counts = {
        f"b{i}": Count(
            "pk",
            filter=Q(**{f"{column}__gte": edges[i]})
            & (
                Q(**{f"{column}__lte": end})
                if i == bars - 1
                else Q(**{f"{column}__lt": edges[i + 1]})
            ),
        )
        for i in range(bars)
    }
    totals = events.order_by().aggregate(**counts)
    values = [totals[f"b{i}"] or 0 for i in range(bars)]
    peak = max(values) if values else 0
    width = 1000 / bars
    rows = []
    for i, count in enumerate(values):
        height = round(count / peak * 96, 2) if peak else 0
        rows.append(
            TimelineBar(
                start=edges[i],
                end=edges[i + 1],
                count=count,
                x=round(i * width, 2),
                y=round(100 - height, 2),
                width=round(width - 2, 2),
                height=height,
            )
        )
    return Timeline(bars=rows, total=sum(values), peak=peak, start=start, end=end)


def signal_activity(*, signal: Signal) -> QuerySet[SignalActivity]:
    return SignalActivity.objects.filter(signal=signal).order_by("-created_at", "-id")


# --- Passlist and denylist ------------------------------------------------------------------


def passfilter_rows(*, now: datetime, include_ended: bool) -> QuerySet[PassFilter]:
    return passlist.passfilter_list(now=now, include_ended=include_ended).select_related("signal")


def denylist_rows(*, now: datetime, include_expired: bool) -> QuerySet[DenylistEntry]:
    return denylist.denylist_entries(now=now, include_expired=include_expired).select_related(
        "signal"
    )


@dataclass(slots=True)
class RuleInfo:
    description: str
    next_steps: str


def signal_rule_info(*, rule_id: str) -> RuleInfo | None:
    """What the signal rule says about its signals (description, next steps): a custom or
    tuned rule's stored definition, else the shipped rule's; None for a rule that is gone."""
    stored = SignalRule.objects.filter(rule_id=rule_id).values_list("definition", flat=True).first()
    rule = None
    if stored is not None:
        try:
            rule = parse_signal_rule(stored)
        except SignalRuleError:
            # Validated when saved; one a format change broke shows what the shipped rule says.
            rule = None
    rule = rule or builtin_signal_rules().get(rule_id)
    if rule is None or not (rule.description or rule.next_steps):
        return None
    return RuleInfo(description=rule.description, next_steps=rule.next_steps)
