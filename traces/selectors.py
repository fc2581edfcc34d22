"""Read queries over security events: suspicious requests, as the explorer lists them."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Max, Min, Q, QuerySet
from django.db.models.functions import Substr, TruncDay, TruncHour, TruncMinute
from django.utils import timezone

from services.models import Service
from signals.models import key_path_text
from traces.models import SecurityEvent, Span

WINDOWS = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
DEFAULT_WINDOW = "24h"


class FilterError(ValueError):
    """A filter value that cannot be applied; the message names the filter."""


@dataclass(frozen=True)
class RequestFilters:
    # The service's id: links carry ids, never a name that came from a trace.
    service: str = ""
    env: str = ""
    rule_type: str = ""
    rule_id: str = ""
    client_ip: str = ""
    user: str = ""
    # An exact code (`404`) or a class (`4xx`).
    status: str = ""
    window: str = DEFAULT_WINDOW
    # Free text over the URL, route, user agent, rule name and user.
    q: str = ""

    @classmethod
    def from_query(cls, query: dict[str, str]) -> RequestFilters:
        values = {name: query.get(name, "").strip()[:500] for name in cls.__dataclass_fields__}
        values["window"] = values["window"] or DEFAULT_WINDOW
        return cls(**values)

    def events(self, *, now: datetime | None = None) -> QuerySet[SecurityEvent]:
        """The security events these filters select; a request matches when one does."""
        now = now or timezone.now()
        if self.window not in WINDOWS:
            raise FilterError(f"window: one of {', '.join(WINDOWS)}")
        events = SecurityEvent.objects.filter(detected_at__gte=now - WINDOWS[self.window])
        if self.service:
            if not self.service.isdigit():
                raise FilterError("service: not a service id")
            events = events.filter(service_id=int(self.service))
        if self.env:
            events = events.filter(env=self.env)
        if self.rule_type:
            events = events.filter(rule_type=self.rule_type)
        if self.rule_id:
            events = events.filter(rule_id=self.rule_id)
        if self.client_ip:
            try:
                events = events.filter(client_ip=str(ipaddress.ip_address(self.client_ip)))
            except ValueError:
                raise FilterError("client IP: not an IP address") from None
        if self.user:
            events = events.filter(user=self.user)
        if self.status:
            events = events.filter(_status_lookup(self.status))
        if self.q:
            events = events.filter(
                Q(url__icontains=self.q)
                | Q(route__icontains=self.q)
                | Q(user_agent__icontains=self.q)
                | Q(rule_name__icontains=self.q)
                | Q(user__icontains=self.q)
            )
        return events

    @property
    def active(self) -> bool:
        return any(getattr(self, name) for name in self.__dataclass_fields__ if name != "window")


def _status_lookup(status: str) -> Q:
    text = status.lower()
    if len(text) == 3 and text[0] in "12345" and text[1:] == "xx":
        low = int(text[0]) * 100
        return Q(status_code__gte=low, status_code__lt=low + 100)
    if text.isdigit() and 100 <= int(text) <= 599:
        return Q(status_code=int(text))
    raise FilterError("status: a code such as 404, or a class such as 5xx")


@dataclass
class SuspiciousRequest:
    """One request (a service-entry span) in which at least one rule matched."""

    trace_id: str
    span_id: str
    detected_at: datetime
    service: Service
    env: str
    method: str
    route: str
    url: str
    status_code: int | None
    client_ip: str | None
    client_ip_source: str
    user: str
    user_agent: str
    blocked: bool = False
    # Every matched rule's type, name and id, once each, in the order first seen.
    rule_types: list[str] = field(default_factory=list)
    rule_names: list[str] = field(default_factory=list)
    rule_ids: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    # Every event of the request is excluded by a passlist entry.
    excluded: bool = True

    @property
    def client_ip_is_private(self) -> bool:
        if not self.client_ip:
            return False
        try:
            return not ipaddress.ip_address(self.client_ip).is_global
        except ValueError:
            return False


@dataclass
class RequestPage:
    requests: list[SuspiciousRequest]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def has_previous(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages

    @property
    def mostly_private_ips(self) -> bool:
        """Most listed requests come from private addresses: the console probably sees a
        proxy's address rather than the client's."""
        with_ip = [r for r in self.requests if r.client_ip]
        return bool(with_ip) and sum(r.client_ip_is_private for r in with_ip) * 2 > len(with_ip)


def suspicious_request_page(
    *, filters: RequestFilters, page: int = 1, per_page: int = 50, now: datetime | None = None
) -> RequestPage:
    """A page of suspicious requests, newest first, in three queries whatever the page size:
    the count, the page's request keys, and their events."""
    grouped = (
        filters.events(now=now)
        .values("trace_id", "span_id")
        .annotate(at=Max("detected_at"))
        .order_by("-at", "-span_id", "-trace_id")
    )
    total = grouped.count()
    page = max(1, min(page, max(1, -(-total // per_page))))
    start = (page - 1) * per_page
    keys = [(row["trace_id"], row["span_id"]) for row in grouped[start : start + per_page]]
    return RequestPage(requests=list(_requests(keys)), total=total, page=page, per_page=per_page)


def suspicious_requests_all(
    *, filters: RequestFilters, limit: int, now: datetime | None = None
) -> Iterator[SuspiciousRequest]:
    """Up to `limit` requests for an export, newest first, fetched a page at a time."""
    grouped = (
        filters.events(now=now)
        .values("trace_id", "span_id")
        .annotate(at=Max("detected_at"))
        .order_by("-at", "-span_id", "-trace_id")
    )
    step = 500
    for offset in range(0, limit, step):
        rows = grouped[offset : min(offset + step, limit)]
        keys = [(row["trace_id"], row["span_id"]) for row in rows]
        if not keys:
            return
        yield from _requests(keys)


def _requests(keys: list[tuple[str, str]]) -> Iterator[SuspiciousRequest]:
    if not keys:
        return
    wanted = set(keys)
    events = (
        SecurityEvent.objects.filter(
            span_id__in={span for _, span in keys}, trace_id__in={trace for trace, _ in keys}
        )
        .select_related("service")
        .order_by("detected_at", "id")
    )
    by_key: dict[tuple[str, str], SuspiciousRequest] = {}
    for event in events:
        key = (event.trace_id, event.span_id)
        if key not in wanted:
            continue
        request = by_key.get(key)
        if request is None:
            request = by_key[key] = SuspiciousRequest(
                trace_id=event.trace_id,
                span_id=event.span_id,
                detected_at=event.detected_at,
                service=event.service,
                env=event.env,
                method=event.method,
                route=event.route,
                url=event.url,
                status_code=event.status_code,
                client_ip=event.client_ip,
                client_ip_source=event.client_ip_source,
                user=event.user,
                user_agent=event.user_agent,
            )
        request.blocked = request.blocked or event.blocked
        request.excluded = request.excluded and event.excluded_by_id is not None
        for values, value in (
            (request.rule_types, event.rule_type),
            (request.rule_names, event.rule_name or event.rule_id),
            (request.rule_ids, event.rule_id),
            (request.sources, event.source),
        ):
            if value and value not in values:
                values.append(value)
    for key in keys:
        if key in by_key:
            yield by_key[key]


def filter_choices() -> dict[str, list[Any]]:
    """The values the explorer's selects offer: what the stored events hold."""
    return {
        "services": list(Service.objects.order_by("name", "env").values_list("pk", "name", "env")),
        "envs": list(
            Service.objects.exclude(env="").order_by("env").values_list("env", flat=True).distinct()
        ),
        "rule_types": list(
            SecurityEvent.objects.exclude(rule_type="")
            .order_by("rule_type")
            .values_list("rule_type", flat=True)
            .distinct()
        ),
    }


# --- One trace: waterfall, attack flow and findings -----------------------------------------

_HEX_ID = re.compile(r"^[0-9a-fA-F]{1,32}$")
MAX_SHOWN_VALUE = 2000


def normalize_trace_id(value: str) -> str | None:
    """A trace id as stored (32 hex digits), from hex or from the decimal form tracers log."""
    if value.isdigit() and len(value) <= 39:
        number = int(value)
        return f"{number:032x}" if number < 2**128 else None
    if _HEX_ID.match(value):
        return value.lower().rjust(32, "0")
    return None


def trace_spans(*, trace_id: str) -> list[Span]:
    """A trace's spans by start, from its 128-bit id, or from the 64-bit id logs show."""
    normalized = normalize_trace_id(trace_id)
    if not normalized:
        return []
    spans = list(Span.objects.filter(trace_id=normalized).order_by("start_ns", "id"))
    if not spans and normalized.startswith("0" * 16):
        # A 64-bit id, as logs and x-datadog-trace-id show it, is the low half of a 128-bit
        # id (served by the traces_span_trace_low_idx expression index).
        spans = list(
            Span.objects.annotate(trace_low=Substr("trace_id", 17))
            .filter(trace_low=normalized[16:])
            .order_by("start_ns", "id")
        )
    return spans


@dataclass
class WaterfallRow:
    span: Span
    depth: int
    # Position and length of the span's bar, in thousandths of the trace's duration.
    x: int
    width: int
    attacked: bool

    @property
    def indent(self) -> int:
        """The depth the page indents by (CSS classes depth-0 to depth-8)."""
        return min(self.depth, 8)

    @property
    def duration_ms(self) -> float:
        return self.span.duration_ns / 1e6


@dataclass
class FlowNode:
    service: str
    x: int
    y: int
    entry: bool
    attacked: bool
    spans: int


@dataclass
class FlowEdge:
    source: str
    target: str
    calls: int
    path: str


@dataclass
class Highlighted:
    """A matched value cut into pieces, the matched fragments marked, for the template to
    escape piece by piece."""

    pieces: list[tuple[str, bool]]
    truncated: bool


@dataclass
class Finding:
    event: SecurityEvent
    parameters: list[dict[str, Any]]


@dataclass
class TraceView:
    trace_id: str
    spans: list[Span]
    waterfall: list[WaterfallRow]
    duration_ns: int
    nodes: list[FlowNode]
    edges: list[FlowEdge]
    flow_width: int
    flow_height: int
    findings: list[Finding]

    @property
    def duration_ms(self) -> float:
        return self.duration_ns / 1e6


NODE_WIDTH, NODE_HEIGHT, COLUMN_GAP, ROW_GAP, MARGIN = 170, 44, 70, 26, 12


def trace_view(*, trace_id: str) -> TraceView | None:
    spans = trace_spans(trace_id=trace_id)
    if not spans:
        return None
    full_id = spans[0].trace_id
    events = list(
        SecurityEvent.objects.filter(trace_id=full_id)
        .select_related("service")
        .order_by("detected_at", "id")
    )
    attacked_spans = {event.span_id for event in events}
    start = min(span.start_ns for span in spans)
    end = max(span.start_ns + span.duration_ns for span in spans)
    duration = max(end - start, 1)
    by_id = {span.span_id: span for span in spans}
    waterfall = [
        WaterfallRow(
            span=span,
            depth=depth,
            x=(span.start_ns - start) * 1000 // duration,
            width=max(span.duration_ns * 1000 // duration, 3),
            attacked=span.span_id in attacked_spans,
        )
        for span, depth in _tree_order(spans, by_id)
    ]
    nodes, edges, width, height = _attack_flow(spans, by_id, attacked_spans)
    return TraceView(
        trace_id=full_id,
        spans=spans,
        waterfall=waterfall,
        duration_ns=duration,
        nodes=nodes,
        edges=edges,
        flow_width=width,
        flow_height=height,
        findings=[
            Finding(
                event=event,
                parameters=[_shown_parameter(parameter) for parameter in event.parameters],
            )
            for event in events
        ],
    )


def _shown_parameter(parameter: dict[str, Any]) -> dict[str, Any]:
    """A matched parameter as the trace page shows it. A RASP match holds the request input
    (`params`) and the resource the application reached with it (`resource`: the shell command,
    the SQL query, the file or the URL); a WAF match is the input itself."""
    params, resource = parameter.get("params"), parameter.get("resource")
    source = params if isinstance(params, dict) else parameter
    reached = resource if isinstance(resource, dict) else {}
    return {
        "input": str(source.get("address") or ""),
        "key_path": key_path_text(source.get("key_path")),
        "shown": highlighted(source.get("value"), parameter),
        "highlight": _texts(parameter.get("highlight")),
        "reached": str(reached.get("address") or ""),
        "reached_shown": highlighted(reached.get("value"), parameter) if reached else None,
    }


def _texts(value: object) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list) else []


def _tree_order(spans: list[Span], by_id: dict[str, Span]) -> list[tuple[Span, int]]:
    """Spans depth first under their parents, each with its depth; orphans at the top level."""
    children: dict[str, list[Span]] = {}
    roots = []
    for span in spans:
        if span.parent_id and span.parent_id in by_id and span.parent_id != span.span_id:
            children.setdefault(span.parent_id, []).append(span)
        else:
            roots.append(span)
    ordered: list[tuple[Span, int]] = []
    seen: set[str] = set()
    stack = [(span, 0) for span in reversed(roots)]
    while stack:
        span, depth = stack.pop()
        if span.span_id in seen:  # a cycle in hostile input
            continue
        seen.add(span.span_id)
        ordered.append((span, depth))
        stack.extend((child, depth + 1) for child in reversed(children.get(span.span_id, [])))
    # Spans only reachable through a cycle.
    ordered.extend((span, 0) for span in spans if span.span_id not in seen)
    return ordered


def _attack_flow(
    spans: list[Span], by_id: dict[str, Span], attacked_spans: set[str]
) -> tuple[list[FlowNode], list[FlowEdge], int, int]:
    """Services as nodes in columns by how many services the request went through to reach
    them; a call from one service to another as an edge."""
    depth: dict[str, int] = {}
    calls: dict[tuple[str, str], int] = {}
    span_counts: dict[str, int] = {}
    entry: set[str] = set()
    attacked: set[str] = set()
    for span, _ in _tree_order(spans, by_id):
        service = span.service_name
        span_counts[service] = span_counts.get(service, 0) + 1
        parent = by_id.get(span.parent_id) if span.parent_id else None
        if parent is None or parent.span_id == span.span_id:
            depth.setdefault(service, 0)
            entry.add(service)
        elif parent.service_name != service:
            calls[(parent.service_name, service)] = calls.get((parent.service_name, service), 0) + 1
            depth.setdefault(service, depth.get(parent.service_name, 0) + 1)
        else:
            depth.setdefault(service, depth.get(parent.service_name, 0))
        if span.span_id in attacked_spans:
            attacked.add(service)
    columns: dict[int, list[str]] = {}
    for service, column in depth.items():
        columns.setdefault(column, []).append(service)
    position: dict[str, tuple[int, int]] = {}
    nodes = []
    for column, services in sorted(columns.items()):
        for row, service in enumerate(services):
            x = MARGIN + column * (NODE_WIDTH + COLUMN_GAP)
            y = MARGIN + row * (NODE_HEIGHT + ROW_GAP)
            position[service] = (x, y)
            nodes.append(
                FlowNode(
                    service=service,
                    x=x,
                    y=y,
                    entry=service in entry,
                    attacked=service in attacked,
                    spans=span_counts[service],
                )
            )
    edges = []
    for (source, target), count in sorted(calls.items()):
        (x1, y1), (x2, y2) = position[source], position[target]
        start_x, start_y = x1 + NODE_WIDTH, y1 + NODE_HEIGHT // 2
        end_x, end_y = x2, y2 + NODE_HEIGHT // 2
        if end_x <= start_x:  # a call back to an earlier column: loop below the nodes
            start_x, end_x = x1 + NODE_WIDTH // 2, x2 + NODE_WIDTH // 2
            start_y, end_y = y1 + NODE_HEIGHT, y2 + NODE_HEIGHT
            bend = max(start_y, end_y) + 40
            path = f"M{start_x},{start_y} C{start_x},{bend} {end_x},{bend} {end_x},{end_y}"
        else:
            middle = (start_x + end_x) // 2
            path = f"M{start_x},{start_y} C{middle},{start_y} {middle},{end_y} {end_x},{end_y}"
        edges.append(FlowEdge(source=source, target=target, calls=count, path=path))
    width = MARGIN * 2 + (max(columns) + 1) * (NODE_WIDTH + COLUMN_GAP) - COLUMN_GAP
    height = MARGIN * 2 + max(len(s) for s in columns.values()) * (NODE_HEIGHT + ROW_GAP) + 40
    return nodes, edges, width, height


def highlighted(value: object, parameter: dict[str, Any]) -> Highlighted:
    """The matched value with the fragments the rule highlighted marked: each fragment's first
    occurrence, in order."""
    text = "" if value is None else str(value)
    truncated = len(text) > MAX_SHOWN_VALUE
    text = text[:MAX_SHOWN_VALUE]
    fragments = [f for f in parameter.get("highlight") or [] if isinstance(f, str) and f]
    spans: list[tuple[int, int]] = []
    for fragment in fragments:
        at = text.find(fragment)
        if at >= 0 and not any(a < at + len(fragment) and at < b for a, b in spans):
            spans.append((at, at + len(fragment)))
    pieces: list[tuple[str, bool]] = []
    cursor = 0
    for a, b in sorted(spans):
        if a > cursor:
            pieces.append((text[cursor:a], False))
        pieces.append((text[a:b], True))
        cursor = b
    if cursor < len(text):
        pieces.append((text[cursor:], False))
    return Highlighted(pieces=pieces, truncated=truncated)


# --- Attack summary (home) -------------------------------------------------------------------

_SUMMARY_BUCKETS = {
    "1h": (TruncMinute, timedelta(minutes=5)),
    "24h": (TruncHour, timedelta(hours=1)),
    "7d": (TruncHour, timedelta(hours=12)),
    "30d": (TruncDay, timedelta(days=1)),
}
TOP = 10


@dataclass
class TrafficBar:
    start: datetime
    requests: int
    blocked: int
    # Position and heights in a 1000 x 100 chart.
    x: int = 0
    width: int = 0
    height: int = 0
    blocked_height: int = 0

    @property
    def y(self) -> int:
        return 100 - self.height

    @property
    def blocked_y(self) -> int:
        return 100 - self.blocked_height


@dataclass
class AttackSummary:
    window: str
    requests: int
    attackers: int
    blocked: int
    bars: list[TrafficBar]
    # Rows of aggregates: {"service__name", "env", "requests"}, {"service__name", "route",
    # "requests"}, {"client_ip", "requests", "services", "last"}.
    services: list[Any]
    routes: list[Any]
    top_attackers: list[Any]
    signals: list[tuple[str, int]]


def attack_summary(*, window: str = DEFAULT_WINDOW, now: datetime | None = None) -> AttackSummary:
    """What the home page shows for the window: attack traffic over time, the most attacked
    services and routes, the top attackers, and open signals by severity. A fixed number of
    queries, each an aggregate."""
    from signals.models import Severity, Signal

    if window not in WINDOWS:
        raise FilterError(f"window: one of {', '.join(WINDOWS)}")
    now = now or timezone.now()
    since = now - WINDOWS[window]
    events = SecurityEvent.objects.filter(detected_at__gte=since)
    totals = events.aggregate(
        requests=Count("span_id", distinct=True),
        attackers=Count("client_ip", distinct=True),
        blocked=Count("span_id", filter=Q(blocked=True), distinct=True),
    )

    trunc, step = _SUMMARY_BUCKETS[window]
    count = int(WINDOWS[window] / step)
    bars = [TrafficBar(start=since + step * i, requests=0, blocked=0) for i in range(count)]
    for row in (
        events.annotate(at=trunc("detected_at"))
        .values("at")
        .annotate(
            n=Count("span_id", distinct=True),
            b=Count("span_id", filter=Q(blocked=True), distinct=True),
        )
        .order_by()
    ):
        index = min(max(int((row["at"] - since) / step), 0), count - 1)
        bars[index].requests += row["n"]
        bars[index].blocked += row["b"]
    top = max((bar.requests for bar in bars), default=0) or 1
    for index, bar in enumerate(bars):
        bar.width = 1000 // count
        bar.x = index * bar.width
        bar.height = bar.requests * 100 // top
        bar.blocked_height = bar.blocked * 100 // top

    services = list(
        events.values("service_id", "service__name", "env")
        .annotate(requests=Count("span_id", distinct=True))
        .order_by("-requests", "service__name")[:TOP]
    )
    routes = list(
        events.exclude(route="")
        .values("service__name", "route")
        .annotate(requests=Count("span_id", distinct=True))
        .order_by("-requests", "route")[:TOP]
    )
    top_attackers = list(
        events.exclude(client_ip=None)
        .values("client_ip")
        .annotate(
            requests=Count("span_id", distinct=True),
            services=Count("service_id", distinct=True),
            last=Max("detected_at"),
        )
        .order_by("-requests", "client_ip")[:TOP]
    )
    ranks = {value: Severity.rank(value) for value in Severity.values}
    signals = sorted(
        (
            (row["severity"], row["n"])
            for row in Signal.objects.exclude(status=Signal.Status.ARCHIVED)
            .values("severity")
            .annotate(n=Count("id"))
            .order_by()
        ),
        key=lambda pair: -ranks.get(pair[0], 0),
    )
    return AttackSummary(
        window=window,
        requests=totals["requests"],
        attackers=totals["attackers"],
        blocked=totals["blocked"],
        bars=bars,
        services=services,
        routes=routes,
        top_attackers=top_attackers,
        signals=signals,
    )


# --- Attackers and users ---------------------------------------------------------------------


@dataclass
class Attacker:
    """A client IP, or an authenticated user, seen in suspicious requests over the window."""

    key: str
    requests: int
    services: int
    categories: list[str]
    first_seen: datetime
    last_seen: datetime
    blocked_requests: int
    denylisted: bool = False


def attacker_page(
    *,
    by: str,
    window: str = DEFAULT_WINDOW,
    page: int = 1,
    per_page: int = 50,
    now: datetime | None = None,
) -> tuple[list[Attacker], int]:
    """Client IPs (`by="client_ip"`) or users (`by="user"`) in the window's suspicious
    requests, the most active first, in four queries whatever the page size."""
    from signals.models import DenylistEntry

    if by not in ("client_ip", "user"):
        raise ValueError(by)
    if window not in WINDOWS:
        raise FilterError(f"window: one of {', '.join(WINDOWS)}")
    now = now or timezone.now()
    events = SecurityEvent.objects.filter(detected_at__gte=now - WINDOWS[window])
    events = events.exclude(client_ip=None) if by == "client_ip" else events.exclude(user="")
    grouped = (
        events.values(by)
        .annotate(
            requests=Count("span_id", distinct=True),
            services=Count("service_id", distinct=True),
            first=Min("detected_at"),
            last=Max("detected_at"),
            blocked=Count("span_id", filter=Q(blocked=True), distinct=True),
        )
        .order_by("-requests", "-last", by)
    )
    total = grouped.count()
    start = (max(page, 1) - 1) * per_page
    rows = list(grouped[start : start + per_page])
    keys = [str(row[by]) for row in rows]
    categories: dict[str, list[str]] = {key: [] for key in keys}
    for key, rule_type in (
        events.filter(**{f"{by}__in": keys})
        .exclude(rule_type="")
        .values_list(by, "rule_type")
        .distinct()
        .order_by(by, "rule_type")
    ):
        categories[str(key)].append(rule_type)
    active = DenylistEntry.objects.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
    if by == "user":
        denied = set(
            active.filter(kind=DenylistEntry.Kind.USER, value__in=keys).values_list(
                "value", flat=True
            )
        )
    else:
        # Entries may be networks: an IP is blocked when one of them holds it.
        networks = []
        for value in active.filter(kind=DenylistEntry.Kind.IP).values_list("value", flat=True):
            try:
                networks.append(ipaddress.ip_network(value, strict=False))
            except ValueError:
                continue
        denied = {
            key for key in keys if any(ipaddress.ip_address(key) in network for network in networks)
        }
    return [
        Attacker(
            key=key,
            requests=row["requests"],
            services=row["services"],
            categories=categories[key],
            first_seen=row["first"],
            last_seen=row["last"],
            blocked_requests=row["blocked"],
            denylisted=key in denied,
        )
        for key, row in zip(keys, rows, strict=True)
    ], total
