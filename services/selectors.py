from __future__ import annotations

from django.db.models import QuerySet

from services.models import Service


def service_list(*, env: str | None = None) -> QuerySet[Service]:
    services = Service.objects.all()
    if env:
        services = services.filter(env=env)
    return services.order_by("name", "env")


def service_envs() -> list[str]:
    return list(
        Service.objects.exclude(env="").order_by("env").values_list("env", flat=True).distinct()
    )
