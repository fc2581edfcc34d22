from __future__ import annotations

from django.db import models


class Service(models.Model):
    """A service in one environment, as its tracer reports it (`DD_SERVICE` and `DD_ENV`)."""

    name = models.CharField(max_length=200)
    env = models.CharField(max_length=100, blank=True)
    version = models.CharField(max_length=100, blank=True)
    language = models.CharField(max_length=32, blank=True)
    tracer_version = models.CharField(max_length=64, blank=True)
    asm_enabled = models.BooleanField(default=False)
    first_seen = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(null=True, blank=True)
    # Ownership, kept by people rather than reported by tracers.
    team = models.CharField(max_length=100, blank=True)
    contact = models.EmailField(blank=True)

    class Meta:
        ordering = ["name", "env"]
        constraints = [
            models.UniqueConstraint(fields=["name", "env"], name="services_service_name_env")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.env})" if self.env else self.name
