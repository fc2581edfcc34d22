from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import (
    Aggregate,
    Case,
    Count,
    F,
    IntegerField,
    OuterRef,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce, TruncDay, TruncHour, TruncMinute
from django.utils import timezone

from services.models import Service, ServiceDependency, Vulnerability, VulnerabilitySeverity
from signals.models import Severity, Signal
from traces.models import SecurityEvent

WINDOWS = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
DEFAULT_WINDOW = "24h"

# Trend buckets per window: how the database truncates times, and the bucket length.
_BUCKETS = {
    "1h": (TruncMinute, timedelta(minutes=5)),
    "24h": (TruncHour, timedelta(hours=2)),
    "7d": (TruncDay, timedelta(days=1)),
    "30d": (TruncDay, timedelta(days=3)),
}

# Sort keys the catalog offers: the column's name in the URL, and what it orders by.
SORTS = {
    "name": ("name", "env"),
    "env": ("env", "name"),
    "suspicious": ("suspicious_requests", "name"),
    "attempts": ("attack_attempts", "name"),
    "attackers": ("attackers", "name"),
    "signals": ("open_signals", "name"),
    "asm": ("asm_enabled", "name"),
    "last_seen": ("last_seen", "name"),
}
DEFAULT_SORT = "-suspicious"

# Vulnerabilities that still need someone: what the catalog counts.
UNRESOLVED = (Vulnerability.Status.OPEN, Vulnerability.Status.IN_PROGRESS)


def _per_service(events: QuerySet[Any], aggregate: Aggregate) -> Coalesce:
    """An aggregate over each service's own rows, as a correlated subquery: the window stays in
    the subquery's WHERE (served by the (service, detected_at) and (service, client_ip,
    detected_at) indexes), rather than joining every event of every age and filtering in the
    aggregate, and a count of the services needs none of it."""
    return Coalesce(
        Subquery(
            events.filter(service=OuterRef("pk"))
            .order_by()
            .values("service")
            .annotate(n=aggregate)
            .values("n")
        ),
        0,
    )


def service_list(*, env: str | None = None, window: str = DEFAULT_WINDOW) -> QuerySet[Service]:
    """Services with `suspicious_requests`: requests with a security event in the window,
    most attacked first."""
    since = timezone.now() - WINDOWS[window]
    services = Service.objects.annotate(
        # A request is one service-entry span; several rules matching it count once.
        suspicious_requests=_per_service(
            SecurityEvent.objects.filter(detected_at__gte=since), Count("span_id", distinct=True)
        )
    )
    if env:
        services = services.filter(env=env)
    return services.order_by("-suspicious_requests", "name", "env")


def service_table(
    *, env: str | None = None, window: str = DEFAULT_WINDOW, sort: str = DEFAULT_SORT
) -> QuerySet[Service]:
    """Services with their security figures over the window: `suspicious_requests` (requests
    with a security event; several rules on one request count once), `attack_attempts`
    (events), `attackers` (client IPs), and `open_signals`."""
    since = timezone.now() - WINDOWS[window]
    events = SecurityEvent.objects.filter(detected_at__gte=since)
    services = Service.objects.annotate(
        suspicious_requests=_per_service(events, Count("span_id", distinct=True)),
        attack_attempts=_per_service(events, Count("pk")),
        attackers=_per_service(events, Count("client_ip", distinct=True)),
        open_signals=_per_service(
            Signal.objects.exclude(status=Signal.Status.ARCHIVED), Count("pk")
        ),
    )
    if env:
        services = services.filter(env=env)
    descending = sort.startswith("-")
    fields = SORTS.get(sort.lstrip("-"), SORTS[DEFAULT_SORT.lstrip("-")])
    ordering = [
        (F(name).desc(nulls_last=True) if descending else F(name).asc(nulls_last=True))
        if index == 0
        else name
        for index, name in enumerate(fields)
    ]
    return services.order_by(*ordering, "pk")


@dataclass
class ServiceFigures:
    """What the catalog shows beside each service, fetched for a whole page at once."""

    categories: list[tuple[str, int]] = field(default_factory=list)
    signals: list[tuple[str, int]] = field(default_factory=list)
    trend: list[int] = field(default_factory=list)
    # Unresolved vulnerabilities (open or in progress) by adjusted severity, worst first.
    vulnerabilities: list[tuple[str, int]] = field(default_factory=list)

    @property
    def sparkline(self) -> str:
        """The trend as SVG polyline points in a 100 x 20 box."""
        if not self.trend:
            return ""
        top = max(self.trend) or 1
        step = 100 / max(len(self.trend) - 1, 1)
        return " ".join(
            f"{i * step:.1f},{19 - value * 18 / top:.1f}" for i, value in enumerate(self.trend)
        )


def service_figures(
    *, service_ids: list[int], window: str = DEFAULT_WINDOW, now: datetime | None = None
) -> dict[int, ServiceFigures]:
    """Attack attempts by category, open signals by severity, unresolved vulnerabilities by
    severity and the trend of suspicious requests, for the given services: four queries
    whatever their number."""
    now = now or timezone.now()
    since = now - WINDOWS[window]
    figures = {pk: ServiceFigures() for pk in service_ids}
    events = SecurityEvent.objects.filter(service_id__in=service_ids, detected_at__gte=since)
    for row in (
        events.exclude(rule_type="")
        .values("service_id", "rule_type")
        .annotate(n=Count("id"))
        .order_by("service_id", "-n", "rule_type")
    ):
        figures[row["service_id"]].categories.append((row["rule_type"], row["n"]))

    ranks = {value: Severity.rank(value) for value in Severity.values}
    for signal_row in (
        Signal.objects.filter(service_id__in=service_ids)
        .exclude(status=Signal.Status.ARCHIVED)
        .values("service_id", "severity")
        .annotate(n=Count("id"))
    ):
        figures[signal_row["service_id"]].signals.append((signal_row["severity"], signal_row["n"]))
    for item in figures.values():
        item.signals.sort(key=lambda pair: -ranks.get(pair[0], 0))

    for vulnerability_row in (
        Vulnerability.objects.filter(service_id__in=service_ids, status__in=UNRESOLVED)
        .values("service_id", "severity")
        .annotate(n=Count("id"))
        .order_by()
    ):
        figures[vulnerability_row["service_id"]].vulnerabilities.append(
            (vulnerability_row["severity"], vulnerability_row["n"])
        )
    for item in figures.values():
        item.vulnerabilities.sort(key=lambda pair: -VulnerabilitySeverity.rank(pair[0]))

    trunc, bucket = _BUCKETS[window]
    buckets = int(WINDOWS[window] / bucket)
    for item in figures.values():
        item.trend = [0] * buckets
    for bucket_row in (
        events.annotate(at=trunc("detected_at"))
        .values("service_id", "at")
        .annotate(n=Count("span_id", distinct=True))
        .order_by()
    ):
        index = int((bucket_row["at"] - since) / bucket) if bucket_row["at"] >= since else 0
        figures[bucket_row["service_id"]].trend[min(max(index, 0), buckets - 1)] += bucket_row["n"]
    return figures


def service_envs() -> list[str]:
    return list(
        Service.objects.exclude(env="").order_by("env").values_list("env", flat=True).distinct()
    )


# --- Vulnerabilities ----------------------------------------------------------------------

VULNERABILITY_SORTS = {
    "severity": ("severity_rank", "-last_detected"),
    "library": ("library", "version"),
    "service": ("service__name", "service__env"),
    "status": ("status", "-severity_rank"),
    "first_detected": ("first_detected",),
    "last_detected": ("last_detected",),
}
DEFAULT_VULNERABILITY_SORT = "-severity"


@dataclass
class VulnerabilityFilters:
    severities: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    service: str = ""
    env: str = ""
    library: str = ""
    advisory: str = ""
    service_id: int | None = None


def _severity_rank() -> Case:
    return Case(
        *[
            When(severity=value, then=Value(VulnerabilitySeverity.rank(value)))
            for value in VulnerabilitySeverity.values
        ],
        default=Value(0),
        output_field=IntegerField(),
    )


def vulnerability_list(
    *, filters: VulnerabilityFilters, sort: str = DEFAULT_VULNERABILITY_SORT
) -> QuerySet[Vulnerability]:
    """Vulnerabilities with their service and advisory, filtered and sorted."""
    rows = Vulnerability.objects.select_related("service", "advisory").annotate(
        severity_rank=_severity_rank()
    )
    if filters.severities:
        rows = rows.filter(severity__in=filters.severities)
    if filters.statuses:
        rows = rows.filter(status__in=filters.statuses)
    if filters.service:
        rows = rows.filter(service__name=filters.service)
    if filters.service_id is not None:
        rows = rows.filter(service_id=filters.service_id)
    if filters.env:
        rows = rows.filter(env=filters.env)
    if filters.library:
        rows = rows.filter(library__icontains=filters.library.strip())
    if filters.advisory:
        rows = rows.filter(advisory__osv_id=filters.advisory.strip())
    descending = sort.startswith("-")
    fields = VULNERABILITY_SORTS.get(
        sort.lstrip("-"), VULNERABILITY_SORTS[DEFAULT_VULNERABILITY_SORT.lstrip("-")]
    )
    ordering = [
        (F(name).desc() if descending else F(name).asc())
        if index == 0
        else (F(name.lstrip("-")).desc() if name.startswith("-") else F(name).asc())
        for index, name in enumerate(fields)
    ]
    return rows.order_by(*ordering, "-pk")


def vulnerability_detail(*, pk: int) -> Vulnerability | None:
    return (
        Vulnerability.objects.select_related("service", "advisory")
        .prefetch_related("activity")
        .filter(pk=pk)
        .first()
    )


def vulnerability_service_names() -> list[str]:
    return list(
        Service.objects.filter(vulnerabilities__isnull=False)
        .order_by("name")
        .values_list("name", flat=True)
        .distinct()
    )


def service_detail(*, pk: int) -> Service | None:
    return Service.objects.filter(pk=pk).first()


def service_dependency_list(*, service: Service) -> QuerySet[ServiceDependency]:
    return service.dependencies.order_by("name", "-last_seen", "version")


def safe_references(references: object) -> list[dict[str, str]]:
    """An advisory's references fit to be links: http and https URLs only (a feed could carry
    `javascript:` URLs, which a link would run)."""
    if not isinstance(references, list):
        return []
    return [
        {"type": str(ref.get("type") or "WEB"), "url": ref["url"]}
        for ref in references
        if isinstance(ref, dict)
        and isinstance(ref.get("url"), str)
        and ref["url"].lower().startswith(("https://", "http://"))
    ]
