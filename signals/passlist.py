"""The passlist (exclusion filters): creating and ending entries, the entry a signal
suggests, and how much an entry would have excluded over the last 7 days.

An entry applies from its creation on: the evaluator checks every event it claims against the
active entries (`PassFilter.matches`), marks the matching ones excluded, and counts them toward
no signal. Events the evaluator saw before are left as they are, on purpose: they already
count in their signals, so marking them excluded afterwards would make `excluded_by` say
something untrue, and finding them means a scan of unbounded size inside a request. The impact
preview shows what the entry would have excluded instead, and the signal it came from is
archived as usual.

Ending an entry (`passfilter_delete`) sets its expiry to now rather than deleting the row: the
events it excluded keep pointing at the entry that says who excluded them and why.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any, Literal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from accounts.models import User
from signals.models import PassFilter, Signal, SignalActivity, key_path_text
from signals.triage import activity_record
from traces.models import BusinessLogicEvent, SecurityEvent

IMPACT_WINDOW = timedelta(days=7)
# Scopes SQL cannot evaluate (globs, networks) are checked in Python, over at most this many
# events per preview; past it the preview says it is incomplete (its numbers are lower bounds).
IMPACT_SCAN_LIMIT = 100_000
# The most recent signals of the window the preview examines.
IMPACT_SIGNAL_LIMIT = 500
# How many of a signal's events its suggestion is drawn from (the most recent).
SUGGESTION_SAMPLE = 1_000
# How many of a signal's linked traces identify the kind of events it counts.
_TRACE_SAMPLE = 100

_TOKEN = re.compile(r"^[A-Za-z0-9_.:/@-]+$")
_WILDCARDS = set("*?[]")


@dataclass(frozen=True)
class PassScopes:
    """What a passlist entry matches; empty scopes match everything."""

    service: str = ""
    env: str = ""
    route: str = ""
    parameter: str = ""
    rule_id: str = ""
    rule_type: str = ""
    ip: str = ""
    user: str = ""

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def of(cls, pass_filter: PassFilter) -> PassScopes:
        return cls(**{name: getattr(pass_filter, name) for name in cls.names()})

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    def is_empty(self) -> bool:
        return not any(self.as_dict().values())

    def describe(self) -> str:
        return " ".join(f"{name}={value}" for name, value in self.as_dict().items() if value)

    def as_filter(self) -> PassFilter:
        """An unsaved entry, whose `matches` is the one the evaluator applies."""
        return PassFilter(**self.as_dict())


def _has_control_characters(value: str) -> bool:
    return any(ord(char) < 32 or ord(char) == 127 for char in value)


def _only_wildcards(value: str, separators: str) -> bool:
    return not value.strip("".join(_WILDCARDS) + separators)


def _clean_ip(value: str) -> str:
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValidationError(
            {"ip": "Expected an IP address (203.0.113.7) or a network (203.0.113.0/24)."}
        ) from None
    if network.prefixlen == 0:
        raise ValidationError({"ip": "This network holds every address; leave ip empty."})
    # One form per network, so that the same network is not listed twice as two strings.
    return str(network.network_address) if network.num_addresses == 1 else str(network)


def passfilter_scopes_clean(scopes: PassScopes) -> PassScopes:
    """The scopes stripped and normalized; refuses no scope at all, an IP or network that
    does not parse, globs that match everything, and text a tracer would never report."""
    values = {name: value.strip() for name, value in scopes.as_dict().items()}
    errors: dict[str, str] = {}
    for name, value in values.items():
        limit = getattr(PassFilter._meta.get_field(name), "max_length", None)
        if limit is not None and len(value) > limit:
            errors[name] = f"At most {limit} characters."
        elif _has_control_characters(value):
            errors[name] = "Control characters are not allowed."
    if errors:
        raise ValidationError(errors)
    if not any(values.values()):
        raise ValidationError(
            {"scopes": f"Set at least one scope: {', '.join(PassScopes.names())}."}
        )
    if values["ip"]:
        values["ip"] = _clean_ip(values["ip"])
    route = values["route"]
    if route:
        if not route.startswith(("/", "*")) or any(char.isspace() for char in route):
            errors["route"] = "Expected a route or path glob starting with / (/api/*/health)."
        elif _only_wildcards(route, "/"):
            errors["route"] = "This glob matches every route; leave route empty."
    parameter = values["parameter"]
    if parameter:
        if any(char.isspace() for char in parameter):
            errors["parameter"] = "Expected a dot-joined key path (user.name), without spaces."
        elif _only_wildcards(parameter, "."):
            errors["parameter"] = "This glob matches every parameter; leave parameter empty."
    for name in ("rule_id", "rule_type"):
        if values[name] and not _TOKEN.match(values[name]):
            errors[name] = "Expected an identifier (letters, digits, - _ . :)."
    if errors:
        raise ValidationError(errors)
    return PassScopes(**values)


def _check_expiry(expires_at: datetime | None, now: datetime) -> None:
    if expires_at is None:
        return
    if timezone.is_naive(expires_at):
        raise ValidationError({"expires_at": "Give a time zone (2026-12-31T00:00:00Z)."})
    if expires_at <= now:
        raise ValidationError({"expires_at": "Must be in the future."})


def _clean_reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise ValidationError({"reason": "Say why: the passlist is read by whoever comes next."})
    if len(reason) > 2_000:
        raise ValidationError({"reason": "At most 2000 characters."})
    return reason


@transaction.atomic
def passfilter_create(
    *,
    actor: User | None,
    reason: str,
    expires_at: datetime | None,
    scopes: PassScopes,
    signal: Signal | None = None,
) -> PassFilter:
    """Add a passlist entry. From a signal, the signal gets a `passlisted` activity row."""
    scopes = passfilter_scopes_clean(scopes)
    reason = _clean_reason(reason)
    _check_expiry(expires_at, timezone.now())
    pass_filter = PassFilter.objects.create(
        **scopes.as_dict(),
        reason=reason,
        expires_at=expires_at,
        signal=signal,
        created_by=actor,
    )
    if signal is not None:
        activity_record(
            signal=signal,
            kind=SignalActivity.Kind.PASSLISTED,
            actor=actor,
            to_value=f"#{pass_filter.pk} {scopes.describe()}",
            message=reason,
        )
    return pass_filter


@transaction.atomic
def passfilter_delete(*, pass_filter: PassFilter, actor: User | None) -> PassFilter:
    """End an entry now. The row stays (see the module's docstring); an entry that has
    already ended is left as is."""
    now = timezone.now()
    locked = PassFilter.objects.select_for_update().get(pk=pass_filter.pk)
    if locked.expires_at is None or locked.expires_at > now:
        locked.expires_at = now
        locked.save(update_fields=["expires_at"])
        if locked.signal_id is not None:
            # The signal it was made from keeps the record of who ended it, and when.
            activity_record(
                signal=Signal.objects.get(pk=locked.signal_id),
                kind=SignalActivity.Kind.UNPASSLISTED,
                actor=actor,
                from_value=f"#{locked.pk} {PassScopes.of(locked).describe()}",
            )
    pass_filter.expires_at = locked.expires_at
    return locked


def passfilter_list(*, now: datetime, include_ended: bool = False) -> QuerySet[PassFilter]:
    entries = PassFilter.objects.select_related("created_by")
    if not include_ended:
        entries = entries.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
    return entries.order_by("-created_at", "-id")


# --- A signal's events ----------------------------------------------------------------------

# Group-by fields of signal rules as the event columns that hold them. A group field not
# listed here does not narrow the search (see `signal_events`).
_SECURITY_GROUP_FIELDS = {
    "service": "service__name",
    "env": "env",
    "client_ip": "client_ip",
    "ip": "client_ip",
    "user": "user",
    "rule_id": "rule_id",
    "rule_type": "rule_type",
    "route": "route",
    "method": "method",
}
_BUSINESS_GROUP_FIELDS = {
    "service": "service__name",
    "env": "env",
    "client_ip": "client_ip",
    "ip": "client_ip",
    "user_id": "user_id",
    "user_login": "user_login",
    "kind": "kind",
    "name": "name",
}


@dataclass
class SignalEvents:
    """The events a signal counted: security events, or business-logic events (logins)."""

    kind: Literal["security", "business"]
    security: QuerySet[SecurityEvent] = field(default_factory=SecurityEvent.objects.none)
    business: QuerySet[BusinessLogicEvent] = field(default_factory=BusinessLogicEvent.objects.none)


def _traced(signal: Signal) -> Q | None:
    pairs = [
        pair
        for pair in signal.traces[:_TRACE_SAMPLE]
        if isinstance(pair, list | tuple) and len(pair) == 2
    ]
    if not pairs:
        return None
    condition = Q()
    for trace_id, span_id in pairs:
        condition |= Q(trace_id=str(trace_id), span_id=str(span_id))
    return condition


def _group_filter(group: dict[str, Any], lookups: dict[str, str], user_fields: list[str]) -> Q:
    condition = Q()
    for name, value in group.items():
        if not (value is None or isinstance(value, str | int)):
            continue
        if name == "user":
            alternatives = Q()
            for user_field in user_fields:
                alternatives |= Q(**{user_field: value})
            condition &= alternatives
        elif name in lookups:
            condition &= Q(**{lookups[name]: value})
    return condition


def signal_events(*, signal: Signal, since: datetime | None = None) -> SignalEvents:
    """The not-excluded events a signal counted, or as near as the stored signal allows.

    A signal does not store its events, only a sample of their traces. The events are found
    again from what it does store: its service and env, its group values (the columns of
    `_SECURITY_GROUP_FIELDS`), its first-to-last-seen range, and the kind of events its traced
    sample shows (their rule types, or the business event kinds). This is an approximation:
    a rule filtering on more than the rule type (a status code, a user agent) is matched by
    its group and rule type only, so some events it did not count may be included.
    """
    start = max(signal.first_seen, since) if since else signal.first_seen
    traced = _traced(signal)
    sample_types: set[str] = set()
    if traced is not None:
        sample_types = set(
            SecurityEvent.objects.filter(traced).values_list("rule_type", flat=True).distinct()
        )
        if not sample_types:
            kinds = set(
                BusinessLogicEvent.objects.filter(traced).values_list("kind", flat=True).distinct()
            )
            if kinds:
                business = BusinessLogicEvent.objects.filter(
                    _group_filter(signal.group, _BUSINESS_GROUP_FIELDS, ["user_id", "user_login"]),
                    kind__in=kinds,
                    occurred_at__gte=start,
                    occurred_at__lte=signal.last_seen,
                    excluded_by__isnull=True,
                )
                if signal.service_id:
                    business = business.filter(service_id=signal.service_id)
                if signal.env:
                    business = business.filter(env=signal.env)
                return SignalEvents(kind="business", business=business)
    security = SecurityEvent.objects.filter(
        _group_filter(signal.group, _SECURITY_GROUP_FIELDS, ["user"]),
        detected_at__gte=start,
        detected_at__lte=signal.last_seen,
        excluded_by__isnull=True,
    )
    if sample_types:
        security = security.filter(rule_type__in=sample_types)
    if signal.service_id:
        security = security.filter(service_id=signal.service_id)
    if signal.env:
        security = security.filter(env=signal.env)
    return SignalEvents(kind="security", security=security)


# --- Suggestion -----------------------------------------------------------------------------


@dataclass
class PassSuggestion:
    scopes: PassScopes
    events_examined: int


def _shared(values: list[str]) -> str:
    """The value every event has, or "" when they differ or have none."""
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else ""


def _shared_parameter(events: list[SecurityEvent]) -> str:
    common: set[str] | None = None
    for event in events:
        paths = {key_path_text(p.get("key_path")) for p in event.parameters} - {""}
        common = paths if common is None else common & paths
        if not common:
            return ""
    # Several key paths in every event: the first in order, for a stable suggestion.
    return sorted(common)[0] if common else ""


def passfilter_suggestion(*, signal: Signal) -> PassSuggestion:
    """The passlist entry a signal suggests: its service and env, and the detection rule
    (else the rule type), route, parameter key path and client IP all its recent events
    share. Falls back on the signal's own routes and attackers when no event is found."""
    found = signal_events(signal=signal)
    service = signal.service.name if signal.service else ""
    if found.kind == "business":
        logins = list(found.business.order_by("-occurred_at")[:SUGGESTION_SAMPLE])
        scopes = PassScopes(
            service=service,
            env=signal.env or _shared([e.env for e in logins]),
            ip=_shared([e.client_ip or "" for e in logins]),
        )
        return PassSuggestion(scopes=scopes, events_examined=len(logins))
    events = list(
        found.security.select_related("service").order_by("-detected_at")[:SUGGESTION_SAMPLE]
    )
    if not events:
        routes = list(signal.routes) if isinstance(signal.routes, dict) else []
        ips = list((signal.attackers or {}).get("ips") or {})
        scopes = PassScopes(
            service=service,
            env=signal.env,
            route=routes[0] if len(routes) == 1 else "",
            ip=ips[0] if len(ips) == 1 else "",
        )
        return PassSuggestion(scopes=scopes, events_examined=0)
    rule_id = _shared([e.rule_id for e in events])
    scopes = PassScopes(
        service=service or _shared([e.service.name for e in events]),
        env=signal.env or _shared([e.env for e in events]),
        rule_id=rule_id,
        rule_type="" if rule_id else _shared([e.rule_type for e in events]),
        route=_shared([e.route for e in events]),
        parameter=_shared_parameter(events),
        ip=_shared([e.client_ip or "" for e in events]),
    )
    return PassSuggestion(scopes=scopes, events_examined=len(events))


# --- Impact preview -------------------------------------------------------------------------


@dataclass
class PassImpact:
    since: datetime
    until: datetime
    security_events: int
    business_events: int
    signals: int
    # The first of them, most recent first.
    signal_ids: list[int]
    # False when the scan limit was reached: the numbers are then lower bounds.
    complete: bool


class _Budget:
    def __init__(self, limit: int) -> None:
        self.left = limit
        self.exhausted = False

    def take(self) -> bool:
        if self.left <= 0:
            self.exhausted = True
            return False
        self.left -= 1
        return True


def _literal_prefix(glob: str) -> str:
    match = re.match(r"[^*?\[]*", glob)
    return match.group(0) if match else ""


def _security_candidates(scopes: PassScopes) -> QuerySet[SecurityEvent]:
    """The events the exact scopes allow, in SQL; globs and networks are checked after."""
    events = SecurityEvent.objects.all()
    for name in ("env", "rule_id", "rule_type", "user"):
        if getattr(scopes, name):
            events = events.filter(**{name: getattr(scopes, name)})
    if scopes.service:
        events = events.filter(service__name=scopes.service)
    if scopes.ip:
        network = ipaddress.ip_network(scopes.ip, strict=False)
        if network.num_addresses == 1:
            events = events.filter(client_ip=str(network.network_address))
        else:
            events = events.filter(client_ip__isnull=False)
    prefix = _literal_prefix(scopes.route)
    if len(prefix) > 1:
        # The glob matches the route or the URL's path; both start with its literal part.
        events = events.filter(Q(route__startswith=prefix) | Q(url__contains=prefix))
    return events


def _business_candidates(scopes: PassScopes) -> QuerySet[BusinessLogicEvent]:
    if scopes.route or scopes.parameter or scopes.rule_id or scopes.rule_type:
        return BusinessLogicEvent.objects.none()
    events = BusinessLogicEvent.objects.all()
    if scopes.service:
        events = events.filter(service__name=scopes.service)
    if scopes.env:
        events = events.filter(env=scopes.env)
    if scopes.user:
        events = events.filter(Q(user_id=scopes.user) | Q(user_login=scopes.user))
    if scopes.ip:
        network = ipaddress.ip_network(scopes.ip, strict=False)
        if network.num_addresses == 1:
            events = events.filter(client_ip=str(network.network_address))
        else:
            events = events.filter(client_ip__isnull=False)
    return events


def _sql_is_exact(scopes: PassScopes) -> bool:
    """Whether the SQL prefilter alone decides (no glob, no network)."""
    if scopes.route or scopes.parameter:
        return False
    return not scopes.ip or ipaddress.ip_network(scopes.ip, strict=False).num_addresses == 1


def _count_matching(
    events: QuerySet[Any], pass_filter: PassFilter, exact: bool, budget: _Budget
) -> int:
    if exact:
        return events.count()
    count = 0
    for event in events.select_related("service").iterator(chunk_size=2_000):
        if not budget.take():
            break
        if pass_filter.matches(event):
            count += 1
    return count


def _all_excluded(found: SignalEvents, pass_filter: PassFilter, budget: _Budget) -> bool:
    events: QuerySet[Any] = found.security if found.kind == "security" else found.business
    seen = 0
    for event in events.select_related("service").iterator(chunk_size=2_000):
        if not budget.take():
            return False
        if not pass_filter.matches(event):
            return False
        seen += 1
    return seen > 0


def passfilter_impact(*, scopes: PassScopes, now: datetime) -> PassImpact:
    """How much an entry with these scopes would have excluded over the 7 days before now.

    Events: those not already excluded that it matches. Signals: those seen in the window
    whose every not-excluded event of the window it matches, found as `signal_events`
    describes (an approximation: the signal keeps no list of its events).
    """
    scopes = passfilter_scopes_clean(scopes)
    since = now - IMPACT_WINDOW
    pass_filter = scopes.as_filter()
    budget = _Budget(IMPACT_SCAN_LIMIT)
    exact = _sql_is_exact(scopes)
    security_events = _count_matching(
        _security_candidates(scopes).filter(
            detected_at__gte=since, detected_at__lte=now, excluded_by__isnull=True
        ),
        pass_filter,
        exact,
        budget,
    )
    business_events = _count_matching(
        _business_candidates(scopes).filter(
            occurred_at__gte=since, occurred_at__lte=now, excluded_by__isnull=True
        ),
        pass_filter,
        exact,
        budget,
    )
    candidates = Signal.objects.filter(last_seen__gte=since, first_seen__lte=now)
    if scopes.service:
        candidates = candidates.filter(Q(service__name=scopes.service) | Q(service__isnull=True))
    if scopes.env:
        candidates = candidates.filter(Q(env=scopes.env) | Q(env=""))
    signal_ids = []
    for signal in candidates.order_by("-last_seen", "-id")[:IMPACT_SIGNAL_LIMIT]:
        found = signal_events(signal=signal, since=since)
        if _all_excluded(found, pass_filter, budget):
            signal_ids.append(signal.pk)
        if budget.exhausted:
            break
    return PassImpact(
        since=since,
        until=now,
        security_events=security_events,
        business_events=business_events,
        signals=len(signal_ids),
        signal_ids=signal_ids[:50],
        complete=not budget.exhausted,
    )
