"""The signal rules at work: the workers turn new security and business events into signals.

Each round claims the events no rule has seen yet (`evaluated_at` null), oldest first, marks
those a passlist entry matches as excluded, then for every active rule finds the groups
(service, attacker...) the other new events belong to. A group's measures are computed in SQL
over every event of its window, not only the new ones: a threshold is crossed by the sum of
several batches. The first case that holds gives the severity; the group's signal is created,
updated, escalated or reopened. Claiming, excluding, the signals and `evaluated_at` share one
transaction, so a round that fails leaves the events to the next one, and a second run finds
nothing left to do.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from django.db import IntegrityError, connection, models, transaction
from django.db.models import Count, ExpressionWrapper, F, Max, Min, Q, Value
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce, Concat, NullIf
from django.utils import timezone

from notifications.outbox import notifications_enqueue, notifications_enqueue_many
from services.models import Service
from signals.models import PassFilter, Severity, Signal, SignalActivity
from signals.signal_rules import (
    ATTRIBUTION_FIELDS,
    BUSINESS_EVENT,
    SECURITY_EVENT,
    SignalRuleDef,
    active_signal_rules,
)
from traces.models import BusinessLogicEvent, SecurityEvent

BATCH_SIZE = 1000
DEFAULT_LIMIT = 20_000
REOPEN_WITHIN = timedelta(days=30)
TOP_ATTACKERS = 50
TOP_ROUTES = 50
MAX_TRACES = 100
# What following an attack changes on an open signal.
FOLLOWED_FIELDS = [
    "severity",
    "attackers",
    "routes",
    "traces",
    "event_count",
    "first_seen",
    "last_seen",
    "updated_at",
]
# Groups measured by one SQL statement; keeps the statement's OR list a reasonable size.
GROUPS_PER_QUERY = 100
# pg_try_advisory_xact_lock key: "asm sig" in ASCII, held by the one evaluating round.
EVALUATOR_LOCK = 0x61736D20736967

Event = SecurityEvent | BusinessLogicEvent
_UNKNOWN: Any = object()


@dataclass(slots=True)
class EvaluationResult:
    security_events: int = 0
    business_events: int = 0
    excluded: int = 0
    signals_created: int = 0
    signals_updated: int = 0
    signals_reopened: int = 0
    severity_changes: int = 0
    # Another worker was evaluating; it takes the events this run would have.
    busy: bool = False

    @property
    def events(self) -> int:
        return self.security_events + self.business_events


class _Source(ABC):
    """What a rule's `source` means in SQL: its model and how its fields are read."""

    model: Any  # SecurityEvent or BusinessLogicEvent
    time: str

    def field(self, name: str) -> Any:
        return F(name)

    def request(self) -> Any:
        # A request is one span; trace and span id together identify it.
        return Concat("trace_id", Value(":"), "span_id", output_field=models.CharField())

    def attribution(self, name: str) -> Q:
        if name == "client_ip":  # an IP field: empty is null
            return Q(client_ip__isnull=False)
        return ~Q(**{name: ""})

    @abstractmethod
    def filter(self, query: dict[str, Any]) -> Q: ...

    @abstractmethod
    def user_of(self, event: Any) -> str: ...

    def time_of(self, event: Any) -> datetime:
        value: datetime = getattr(event, self.time)
        return value


class _SecurityEvents(_Source):
    model = SecurityEvent
    time = "detected_at"

    def field(self, name: str) -> Any:
        if name == "service":
            return F("service_id")
        if name == "tool":
            return KeyTextTransform("tool_name", "rule_tags")
        return F(name)

    def filter(self, query: dict[str, Any]) -> Q:
        q = Q()
        for key in ("rule_type", "rule_id", "rule_category", "source"):
            if key in query:
                q &= Q(**{f"{key}__in": query[key]})
        if "tool" in query:
            has_tool = Q(rule_tags__has_key="tool_name")
            q &= has_tool if query["tool"] else ~has_tool
        if "blocked" in query:
            q &= Q(blocked=query["blocked"])
        if "route" in query:
            q &= ~Q(route="") if query["route"] else Q(route="")
        status = query.get("status_code")
        if status:
            q &= Q(status_code__isnull=False)
            if "min" in status:
                q &= Q(status_code__gte=status["min"])
            if "max" in status:
                q &= Q(status_code__lte=status["max"])
            if "not_in" in status:
                q &= ~Q(status_code__in=status["not_in"])
        return q

    def user_of(self, event: Any) -> str:
        return str(event.user)


class _BusinessEvents(_Source):
    model = BusinessLogicEvent
    time = "occurred_at"

    def field(self, name: str) -> Any:
        if name == "service":
            return F("service_id")
        if name == "user":
            # Failed logins often carry only the login; successes both: the login joins them.
            return Coalesce(NullIf("user_login", Value("")), F("user_id"))
        return F(name)

    def attribution(self, name: str) -> Q:
        if name == "user":
            return ~Q(user_login="", user_id="")
        return super().attribution(name)

    def filter(self, query: dict[str, Any]) -> Q:
        q = Q()
        for key in ("kind", "name"):
            if key in query:
                q &= Q(**{f"{key}__in": query[key]})
        if "user_exists" in query:
            q &= Q(user_exists=query["user_exists"])
        return q

    def user_of(self, event: Any) -> str:
        return str(event.user_login or event.user_id)


SOURCES: dict[str, _Source] = {SECURITY_EVENT: _SecurityEvents(), BUSINESS_EVENT: _BusinessEvents()}


def _rule_filter(rule: SignalRuleDef, source: _Source) -> Q:
    """The events a rule looks at: those of any of its queries, attributable to a group."""
    q = Q()
    for name in rule.group_by:
        if name in ATTRIBUTION_FIELDS:
            q &= source.attribution(name)
    filters = [source.filter(query) for query in rule.queries.values()]
    # An empty filter matches everything; OR-ing Q() would silently drop it instead.
    if all(filters):
        any_query = Q()
        for one in filters:
            any_query |= one
        q &= any_query
    return q


def _group_names(rule: SignalRuleDef) -> list[str]:
    return [f"g_{name}" for name in rule.group_by]


def _annotated(rule: SignalRuleDef, source: _Source, queryset: Any) -> Any:
    return queryset.annotate(**{f"g_{name}": source.field(name) for name in rule.group_by}).filter(
        _rule_filter(rule, source)
    )


def _aggregate(source: _Source, aggregate: str, where: Q) -> Count:
    condition = where or None
    if aggregate == "count":
        return Count("pk", filter=condition)
    expression = (
        source.request() if aggregate == "requests" else source.field(aggregate[len("distinct:") :])
    )
    return Count(expression, distinct=True, filter=condition)


# --- summaries of events: what a signal shows -------------------------------------------------


@dataclass(slots=True)
class _Summary:
    count: int = 0
    first: datetime | None = None
    last: datetime | None = None
    ips: dict[str, list[Any]] = field(default_factory=dict)  # ip -> [count, first, last]
    users: dict[str, list[Any]] = field(default_factory=dict)
    routes: dict[str, int] = field(default_factory=dict)
    traces: list[list[str]] = field(default_factory=list)  # newest first

    @classmethod
    def of_events(cls, events: Sequence[Any], source: _Source) -> _Summary:
        summary = cls(count=len(events))
        ordered = sorted(events, key=lambda e: (source.time_of(e), e.pk), reverse=True)
        for event in ordered:
            at = source.time_of(event)
            summary.first = at if summary.first is None else min(summary.first, at)
            summary.last = at if summary.last is None else max(summary.last, at)
            for bucket, key in (
                (summary.ips, event.client_ip),
                (summary.users, source.user_of(event)),
            ):
                if not key:
                    continue
                entry = bucket.setdefault(str(key), [0, at, at])
                entry[0] += 1
                entry[1], entry[2] = min(entry[1], at), max(entry[2], at)
            route = getattr(event, "route", "")
            if route:
                summary.routes[route] = summary.routes.get(route, 0) + 1
        summary.traces = _unique_traces([e.trace_id, e.span_id] for e in ordered)
        return summary

    @classmethod
    def of_window(cls, events: Any, source: _Source) -> _Summary:
        """The same, computed in SQL over a window's events (a new signal's history)."""
        time = source.time
        totals = events.aggregate(n=Count("pk"), first=Min(time), last=Max(time))
        summary = cls(count=totals["n"], first=totals["first"], last=totals["last"])
        ips = (
            events.exclude(client_ip__isnull=True)
            .order_by()
            .values("client_ip")
            .annotate(n=Count("pk"), first=Min(time), last=Max(time))
            .order_by("-n", "client_ip")[:TOP_ATTACKERS]
        )
        summary.ips = {row["client_ip"]: [row["n"], row["first"], row["last"]] for row in ips}
        users = (
            events.annotate(u=source.field("user"))
            .exclude(u="")
            .exclude(u__isnull=True)
            .order_by()
            .values("u")
            .annotate(n=Count("pk"), first=Min(time), last=Max(time))
            .order_by("-n", "u")[:TOP_ATTACKERS]
        )
        summary.users = {row["u"]: [row["n"], row["first"], row["last"]] for row in users}
        if source.model is SecurityEvent:
            routes = (
                events.exclude(route="")
                .order_by()
                .values("route")
                .annotate(n=Count("pk"))
                .order_by("-n", "route")[:TOP_ROUTES]
            )
            summary.routes = {row["route"]: row["n"] for row in routes}
        newest = events.order_by(f"-{time}", "-pk").values_list("trace_id", "span_id")
        summary.traces = [[t, s] for t, s in newest[:MAX_TRACES]]
        return summary


def _unique_traces(pairs: Iterable[list[str]]) -> list[list[str]]:
    seen: set[tuple[str, str]] = set()
    kept = []
    for trace_id, span_id in pairs:
        if (trace_id, span_id) not in seen:
            seen.add((trace_id, span_id))
            kept.append([trace_id, span_id])
        if len(kept) == MAX_TRACES:
            break
    return kept


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _merged_people(
    stored: dict[str, Any], new: dict[str, list[Any]], limit: int
) -> dict[str, dict[str, Any]]:
    merged = {key: dict(value) for key, value in stored.items() if isinstance(value, dict)}
    for key, (count, first, last) in new.items():
        entry = merged.setdefault(
            key, {"count": 0, "first_seen": _iso(first), "last_seen": _iso(last)}
        )
        entry["count"] = int(entry.get("count", 0)) + count
        # ISO 8601 in UTC sorts as text.
        entry["first_seen"] = min(str(entry.get("first_seen") or _iso(first)), _iso(first))
        entry["last_seen"] = max(str(entry.get("last_seen") or _iso(last)), _iso(last))
    top = sorted(merged.items(), key=lambda item: (-item[1]["count"], item[0]))[:limit]
    return dict(top)


def _merged_routes(stored: dict[str, Any], new: dict[str, int]) -> dict[str, int]:
    merged = {key: int(value) for key, value in stored.items()}
    for route, count in new.items():
        merged[route] = merged.get(route, 0) + count
    return dict(sorted(merged.items(), key=lambda item: (-item[1], item[0]))[:TOP_ROUTES])


def _apply_summary(signal: Signal, summary: _Summary) -> None:
    attackers = signal.attackers if isinstance(signal.attackers, dict) else {}
    signal.attackers = {
        "ips": _merged_people(attackers.get("ips") or {}, summary.ips, TOP_ATTACKERS),
        "users": _merged_people(attackers.get("users") or {}, summary.users, TOP_ATTACKERS),
    }
    signal.routes = _merged_routes(signal.routes or {}, summary.routes)
    signal.traces = _unique_traces([*summary.traces, *(signal.traces or [])])
    signal.event_count += summary.count
    if summary.first is not None:
        signal.first_seen = min(signal.first_seen, summary.first)
    if summary.last is not None:
        signal.last_seen = max(signal.last_seen, summary.last)


# --- one group of one rule --------------------------------------------------------------------


@dataclass
class _Group:
    rule: SignalRuleDef
    source: _Source
    values: tuple[Any, ...]
    events: list[Any]
    now: datetime
    service: Service | None = None
    # Found by _signals_prefetch (None: there is none); _UNKNOWN: look it up.
    open_signal: Any = _UNKNOWN
    archived_signal: Any = _UNKNOWN

    @cached_property
    def end(self) -> datetime:
        return max(self.source.time_of(event) for event in self.events)

    @cached_property
    def key(self) -> str:
        text = json.dumps(
            [[name, value] for name, value in zip(self.rule.group_by, self.values, strict=True)],
            separators=(",", ":"),
            default=str,
        )
        # Long users and routes: the constraint compares a digest instead (same group, same key).
        return text if len(text) <= 500 else "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    @property
    def display(self) -> dict[str, Any]:
        shown = dict(zip(self.rule.group_by, self.values, strict=True))
        if "service" in shown:
            shown["service"] = self.service.name if self.service else str(shown["service"])
        return shown

    def window_filter(self) -> Q:
        q = Q(
            **{
                f"{self.source.time}__gt": self.end - timedelta(seconds=self.rule.window_seconds),
                f"{self.source.time}__lte": self.end,
            }
        )
        for name, value in zip(_group_names(self.rule), self.values, strict=True):
            q &= Q(**{f"{name}__isnull": True}) if value is None else Q(**{name: value})
        return q


def _counted(source: _Source) -> Any:
    """The events that count toward signals: seen by the rules (this round's included, as its
    transaction already marked them) and not excluded by the passlist."""
    return source.model.objects.filter(evaluated_at__isnull=False, excluded_by__isnull=True)


def _measures(
    rule: SignalRuleDef, source: _Source, groups: list[_Group]
) -> dict[tuple[Any, ...], dict[tuple[str, str], int]]:
    """Each group's aggregates over its own window, a few groups to a statement."""
    pairs = rule.aggregates
    aggregates = {
        f"a{index}": _aggregate(source, aggregate, source.filter(rule.queries[query]))
        for index, (query, aggregate) in enumerate(pairs)
    }
    names = _group_names(rule)
    measured: dict[tuple[Any, ...], dict[tuple[str, str], int]] = {}
    for start in range(0, len(groups), GROUPS_PER_QUERY):
        chunk = groups[start : start + GROUPS_PER_QUERY]
        windows = Q()
        for group in chunk:
            windows |= group.window_filter()
        rows = (
            _annotated(rule, source, _counted(source))
            .filter(windows)
            .order_by()
            .values(*names)
            .annotate(**aggregates)
        )
        for row in rows:
            measured[tuple(row[name] for name in names)] = {
                pair: row[f"a{index}"] for index, pair in enumerate(pairs)
            }
    return measured


def _groups_by_rule(
    rules: list[SignalRuleDef], source: _Source, events: list[Any], now: datetime
) -> dict[str, list[_Group]]:
    """Each rule's new events, by group, in one query for all the rules: the database says
    which rule's queries each event matches and computes the group values, so that both agree
    with the window's SQL."""
    if not rules:
        return {}
    by_pk = {event.pk: event for event in events}
    fields = sorted({name for rule in rules for name in rule.group_by})
    matches = {}
    for index, rule in enumerate(rules):
        condition = _rule_filter(rule, source)
        matches[f"m{index}"] = (
            ExpressionWrapper(condition, output_field=models.BooleanField())
            if condition
            else Value(True)
        )
    rows = (
        source.model.objects.filter(pk__in=list(by_pk))
        .annotate(**{f"g_{name}": source.field(name) for name in fields}, **matches)
        .order_by()
        .values("pk", *(f"g_{name}" for name in fields), *matches)
    )
    grouped: dict[str, dict[tuple[Any, ...], list[Any]]] = {rule.id: {} for rule in rules}
    for row in rows:
        for index, rule in enumerate(rules):
            if row[f"m{index}"]:
                values = tuple(row[f"g_{name}"] for name in rule.group_by)
                grouped[rule.id].setdefault(values, []).append(by_pk[row["pk"]])
    service_ids = {
        values[rule.group_by.index("service")]
        for rule in rules
        if "service" in rule.group_by
        for values in grouped[rule.id]
    }
    services = Service.objects.in_bulk(service_ids) if service_ids else {}
    result = {}
    for rule in rules:
        groups = [
            _Group(rule, source, values, found, now) for values, found in grouped[rule.id].items()
        ]
        if "service" in rule.group_by:
            index = rule.group_by.index("service")
            for group in groups:
                group.service = services.get(group.values[index])
        # A fixed order of locks across workers.
        result[rule.id] = sorted(groups, key=lambda group: group.key)
    return result


def _activity(
    signal: Signal, kind: str, *, from_value: str = "", to_value: str = "", message: str = ""
) -> SignalActivity:
    """An activity row of the console itself (no actor), not saved yet."""
    return SignalActivity(
        signal=signal,
        kind=kind,
        actor=None,
        from_value=from_value,
        to_value=to_value,
        message=message,
    )


def _escalation(
    signal: Signal, severity: str | None, result: EvaluationResult
) -> SignalActivity | None:
    """Raise the signal's severity (never lower it); the activity row to save with it."""
    if severity is None or Severity.rank(severity) <= Severity.rank(signal.severity):
        return None
    previous, signal.severity = signal.severity, severity
    result.severity_changes += 1
    return _activity(
        signal,
        SignalActivity.Kind.SEVERITY_CHANGED,
        from_value=previous,
        to_value=severity,
        message=f"The attack now meets the rule's {severity} case.",
    )


def _signal_follow(
    signal: Signal, group: _Group, severity: str | None, result: EvaluationResult
) -> SignalActivity | None:
    """The open signal follows the attack (in memory; the caller saves): even on a quiet
    stretch below the thresholds, as nobody has triaged it yet."""
    _apply_summary(signal, _Summary.of_events(group.events, group.source))
    signal.updated_at = timezone.now()
    result.signals_updated += 1
    return _escalation(signal, severity, result)


def _signal_upsert_once(group: _Group, severity: str | None, result: EvaluationResult) -> None:
    rule = group.rule
    current = group.open_signal
    if current is _UNKNOWN:
        current = (
            Signal.objects.select_for_update()
            .filter(rule_id=rule.id, group_key=group.key)
            .exclude(status=Signal.Status.ARCHIVED)
            .first()
        )
    if current is not None:
        escalated = _signal_follow(current, group, severity, result)
        current.save()
        if escalated is not None:
            escalated.save()
            notifications_enqueue(activity=escalated)
        return
    if severity is None:
        return
    archived = group.archived_signal
    if archived is _UNKNOWN:
        archived = (
            Signal.objects.select_for_update()
            .filter(
                rule_id=rule.id,
                group_key=group.key,
                status=Signal.Status.ARCHIVED,
                archived_at__gte=group.now - REOPEN_WITHIN,
            )
            .order_by("-archived_at", "-pk")
            .first()
        )
    if archived is not None:
        reason = archived.archive_reason
        archived.status = Signal.Status.OPEN
        archived.archive_reason = ""
        archived.archived_at = None
        _apply_summary(archived, _Summary.of_events(group.events, group.source))
        escalated = _escalation(archived, severity, result)
        archived.save()
        _activity(
            archived,
            SignalActivity.Kind.REOPENED,
            from_value=Signal.Status.ARCHIVED,
            to_value=Signal.Status.OPEN,
            message=f"The attack returned (it had been archived as {reason or 'archived'}).",
        ).save()
        if escalated is not None:
            escalated.save()
            notifications_enqueue(activity=escalated)
        result.signals_reopened += 1
        return
    window = _annotated(rule, group.source, _counted(group.source)).filter(group.window_filter())
    summary = _Summary.of_window(window, group.source)
    display = group.display
    signal = Signal(
        rule_id=rule.id,
        rule_name=rule.name[:200],
        title=rule.title_for(display),
        severity=severity,
        group=display,
        group_key=group.key,
        service=group.service,
        env=str(display.get("env", group.service.env if group.service else ""))[:100],
        attackers={},
        routes={},
        traces=[],
        first_seen=summary.first or group.end,
        last_seen=summary.last or group.end,
        event_count=0,
    )
    _apply_summary(signal, summary)
    signal.save()
    created = _activity(
        signal,
        SignalActivity.Kind.CREATED,
        to_value=severity,
        message=f"{rule.name}: {summary.count} events in {rule.window_seconds} s.",
    )
    created.save()
    notifications_enqueue(activity=created)
    result.signals_created += 1


def _signal_upsert(group: _Group, severity: str | None, result: EvaluationResult) -> None:
    for attempt in range(3):
        try:
            # A savepoint: another worker may have created the group's signal since we looked
            # (the one-open-signal constraint refuses ours); then look again and update it.
            with transaction.atomic():
                _signal_upsert_once(group, severity, result)
            return
        except IntegrityError:
            if attempt == 2:
                raise
            group.open_signal = group.archived_signal = _UNKNOWN


def _signals_prefetch(groups: list[_Group], now: datetime) -> None:
    """Each group's open signal and recently archived one, locked, in two queries for all the
    groups of a round rather than two a group (most groups of a busy round have neither)."""
    if not groups:
        return
    rule_ids = {group.rule.id for group in groups}
    keys = {group.key for group in groups}
    # Locked in id order, as every round locks them, so that two rounds cannot deadlock.
    candidates = (
        Signal.objects.select_for_update()
        .filter(rule_id__in=rule_ids, group_key__in=keys)
        .filter(~Q(status=Signal.Status.ARCHIVED) | Q(archived_at__gte=now - REOPEN_WITHIN))
        .order_by("pk")
    )
    open_signals: dict[tuple[str, str], Signal] = {}
    archived: dict[tuple[str, str], Signal] = {}
    for signal in candidates:
        slot = (signal.rule_id, signal.group_key)
        if signal.status != Signal.Status.ARCHIVED:
            open_signals[slot] = signal
            continue
        kept = archived.get(slot)
        if kept is None or (signal.archived_at, signal.pk) > (kept.archived_at, kept.pk):
            archived[slot] = signal
    for group in groups:
        group.open_signal = open_signals.get((group.rule.id, group.key))
        group.archived_signal = archived.get((group.rule.id, group.key))


# --- rounds -----------------------------------------------------------------------------------


def _passlist_apply(events: list[Any], source: _Source, filters: list[PassFilter]) -> list[Any]:
    """Mark the events a passlist entry matches; returns the others."""
    excluded: dict[int, list[int]] = {}
    kept = []
    for event in events:
        entry = next((f for f in filters if f.matches(event)), None)
        if entry is None:
            kept.append(event)
        else:
            excluded.setdefault(entry.pk, []).append(event.pk)
    for entry_id, ids in excluded.items():
        source.model.objects.filter(pk__in=ids).update(excluded_by_id=entry_id)
    return kept


def _claim(source: _Source, size: int) -> list[Any]:
    # SKIP LOCKED: events another round holds are its own; `of` keeps the services unlocked
    # (the intake's workers lock them).
    return list(
        source.model.objects.select_for_update(skip_locked=True, of=("self",))
        .select_related("service")
        .filter(evaluated_at__isnull=True)
        .order_by("pk")[:size]
    )


def _evaluator_lock() -> bool:
    if connection.vendor != "postgresql":
        return True  # SQLite writes one transaction at a time anyway
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [EVALUATOR_LOCK])
        row = cursor.fetchone()
    return bool(row and row[0])


def _round(rules: list[SignalRuleDef], now: datetime, size: int, result: EvaluationResult) -> int:
    filters: list[PassFilter] | None = None
    claimed = 0
    for source_name, source in SOURCES.items():
        events = _claim(source, size)
        if not events:
            continue
        claimed += len(events)
        if source_name == SECURITY_EVENT:
            result.security_events += len(events)
        else:
            result.business_events += len(events)
        if filters is None:
            filters = list(PassFilter.active(now=now))
        kept = _passlist_apply(events, source, filters) if filters else events
        result.excluded += len(events) - len(kept)
        source.model.objects.filter(pk__in=[event.pk for event in events]).update(evaluated_at=now)
        if not kept:
            continue
        source_rules = [rule for rule in rules if rule.source == source_name]
        groups_by_rule = _groups_by_rule(source_rules, source, kept, now)
        _signals_prefetch([g for groups in groups_by_rule.values() for g in groups], now)
        followed: list[Signal] = []
        activity: list[SignalActivity] = []
        for rule in source_rules:
            groups = groups_by_rule[rule.id]
            if not groups:
                continue
            measures = _measures(rule, source, groups)
            for group in groups:
                severity = rule.severity_for(measures.get(group.values, {}))
                if group.open_signal is not None:
                    # Updates cannot break the constraint: saved together, no savepoints.
                    escalated = _signal_follow(group.open_signal, group, severity, result)
                    followed.append(group.open_signal)
                    if escalated is not None:
                        activity.append(escalated)
                elif severity is not None:
                    _signal_upsert(group, severity, result)
        for signal in followed:
            # One plain UPDATE each: cheaper to build than bulk_update's CASE expressions.
            Signal.objects.filter(pk=signal.pk).update(
                **{name: getattr(signal, name) for name in FOLLOWED_FIELDS}
            )
        # Escalations of open signals notify, in this transaction (the outbox).
        notifications_enqueue_many(activities=SignalActivity.objects.bulk_create(activity))
    return claimed


def signals_evaluate(
    *, now: datetime | None = None, limit: int = DEFAULT_LIMIT, batch_size: int = BATCH_SIZE
) -> EvaluationResult:
    """Evaluate the signal rules over the events not yet seen, up to `limit` of each kind,
    `batch_size` to a transaction. Running it again finds nothing new to do.

    On PostgreSQL one round runs at a time (an advisory lock): two workers evaluating the same
    attack side by side would each count only their share and miss its threshold. A worker
    that finds the lock taken returns at once, as the holder goes on until no event is left;
    the beat's next run picks up anything that lands in between.
    """
    now = now or timezone.now()
    rules = active_signal_rules()
    result = EvaluationResult()
    while result.events < limit:
        with transaction.atomic():
            if not _evaluator_lock():
                result.busy = True
                break
            claimed = _round(rules, now, min(batch_size, limit - result.events), result)
        if not claimed:
            break
    return result
