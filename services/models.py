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
    # From the tracer's `app-started` telemetry: products (appsec, sca...), host, runtime.
    products = models.JSONField(default=dict, blank=True)
    host = models.JSONField(default=dict, blank=True)
    runtime = models.JSONField(default=dict, blank=True)
    app_started_at = models.DateTimeField(null=True, blank=True)
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


class ServiceDependency(models.Model):
    """A library a service has loaded, as its tracer's telemetry reports it."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="dependencies")
    name = models.CharField(max_length=200)
    version = models.CharField(max_length=100)
    # SCA reachability: [{"id": advisory id, "reached": [{"path", "symbol", "line"}]}], from
    # the telemetry `metadata` entries of type "reachability".
    reachability = models.JSONField(default=list, blank=True)
    first_seen = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["service", "name", "version"], name="services_dependency_unique"
            )
        ]
        ordering = ["name", "version"]

    def __str__(self) -> str:
        return f"{self.name}=={self.version}"


class ServiceEndpoint(models.Model):
    """A route a service exposes, from the tracer's `app-endpoints` telemetry."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="endpoints")
    method = models.CharField(max_length=16)
    path = models.CharField(max_length=500)
    operation_name = models.CharField(max_length=200, blank=True)
    resource_name = models.CharField(max_length=500, blank=True)
    first_seen = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["service", "method", "path"], name="services_endpoint_unique"
            )
        ]
        ordering = ["path", "method"]

    def __str__(self) -> str:
        return f"{self.method} {self.path}"
