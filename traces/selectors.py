"""Read queries over security events: suspicious requests, as the explorer lists them."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Max, Q, QuerySet
from django.utils import timezone

from services.models import Service
from traces.models import SecurityEvent

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
            events = events.filter(service__name=self.service)
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


def filter_choices() -> dict[str, list[str]]:
    """The values the explorer's selects offer: what the stored events hold."""
    return {
        "services": list(
            Service.objects.order_by("name").values_list("name", flat=True).distinct()
        ),
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
