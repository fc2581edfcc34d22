from __future__ import annotations

from datetime import timedelta

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from services.models import Service

WINDOWS = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
DEFAULT_WINDOW = "24h"


def service_list(*, env: str | None = None, window: str = DEFAULT_WINDOW) -> QuerySet[Service]:
    """Services with `suspicious_requests`: requests with a security event in the window,
    most attacked first."""
    since = timezone.now() - WINDOWS[window]
    services = Service.objects.annotate(
        # A request is one service-entry span; several rules matching it count once.
        suspicious_requests=Count(
            "security_events__span_id",
            filter=Q(security_events__detected_at__gte=since),
            distinct=True,
        )
    )
    if env:
        services = services.filter(env=env)
    return services.order_by("-suspicious_requests", "name", "env")


def service_envs() -> list[str]:
    return list(
        Service.objects.exclude(env="").order_by("env").values_list("env", flat=True).distinct()
    )
