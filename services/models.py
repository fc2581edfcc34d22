from __future__ import annotations

from django.db import models
from django.db.models import Q

from signals.models import ActivityRecord


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
    # OSV's ecosystem name when an upload said it; empty for telemetry, whose ecosystem is the
    # service's language.
    ecosystem = models.CharField(max_length=16, blank=True)
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


class Ecosystem(models.TextChoices):
    """The package ecosystems whose advisories the console matches (OSV's names)."""

    PYPI = "PyPI", "PyPI"
    NPM = "npm", "npm"


class VulnerabilitySeverity(models.TextChoices):
    """CVSS's qualitative rating, plus `unknown` for an advisory without a score."""

    UNKNOWN = "unknown", "Unknown"
    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"
    CRITICAL = "critical", "Critical"

    @classmethod
    def rank(cls, value: str) -> int:
        """0 for UNKNOWN up to 4 for CRITICAL, to compare and sort severities."""
        return list(cls.values).index(value) if value in cls.values else 0


class Advisory(models.Model):
    """One OSV advisory, as imported by `import_advisories`. `affected` keeps the advisory's
    affected entries for the ecosystems the console matches; `AdvisoryPackage` indexes them."""

    osv_id = models.CharField(max_length=100, unique=True)
    ecosystem = models.CharField(max_length=16, choices=Ecosystem.choices)
    aliases = models.JSONField(default=list, blank=True)
    summary = models.TextField(blank=True)
    details = models.TextField(blank=True)
    references = models.JSONField(default=list, blank=True)
    affected = models.JSONField(default=list, blank=True)
    severity_vector = models.CharField(max_length=300, blank=True)
    base_score = models.FloatField(null=True, blank=True)
    base_severity = models.CharField(
        max_length=8, choices=VulnerabilitySeverity.choices, default=VulnerabilitySeverity.UNKNOWN
    )
    published = models.DateTimeField(null=True, blank=True)
    modified = models.DateTimeField()
    # Set when the feed withdrew the advisory: it matches nothing any more.
    withdrawn = models.DateTimeField(null=True, blank=True)
    imported_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["osv_id"]

    def __str__(self) -> str:
        return self.osv_id


class AdvisoryPackage(models.Model):
    """One affected package of an advisory: its normalized name, OSV ranges (ECOSYSTEM and
    SEMVER; GIT ranges are dropped at import) and explicit versions."""

    advisory = models.ForeignKey(Advisory, on_delete=models.CASCADE, related_name="packages")
    ecosystem = models.CharField(max_length=16, choices=Ecosystem.choices)
    name = models.CharField(max_length=200)
    ranges = models.JSONField(default=list, blank=True)
    versions = models.JSONField(default=list, blank=True)
    fixed_versions = models.JSONField(default=list, blank=True)

    class Meta:
        # Serves matching: the advisories of the names a batch of dependencies has.
        indexes = [models.Index(fields=["ecosystem", "name"], name="services_advpkg_eco_name")]

    def __str__(self) -> str:
        return f"{self.advisory_id} {self.ecosystem}:{self.name}"


class Vulnerability(models.Model):
    """A library version a service runs that an advisory affects."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        IN_PROGRESS = "in_progress", "In progress"
        MUTED = "muted", "Muted"
        REMEDIATED = "remediated", "Remediated"
        # The console closed it: the service no longer runs that version, or the advisory no
        # longer affects it (withdrawn or corrected).
        AUTO_CLOSED = "auto_closed", "Auto-closed"

    class MuteReason(models.TextChoices):
        FALSE_POSITIVE = "false_positive", "False positive"
        ACCEPTED_RISK = "accepted_risk", "Accepted risk"
        NOT_EXPLOITABLE = "not_exploitable", "Not exploitable here"
        NO_FIX_AVAILABLE = "no_fix_available", "No fix available"

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="vulnerabilities")
    env = models.CharField(max_length=100, blank=True)
    ecosystem = models.CharField(max_length=16, choices=Ecosystem.choices)
    # The normalized name (PEP 503 for PyPI), as advisories name it.
    library = models.CharField(max_length=200)
    version = models.CharField(max_length=100)
    advisory = models.ForeignKey(Advisory, on_delete=models.CASCADE, related_name="vulnerabilities")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    mute_reason = models.CharField(max_length=20, choices=MuteReason.choices, blank=True)
    reachable = models.BooleanField(default=False)
    base_severity = models.CharField(
        max_length=8, choices=VulnerabilitySeverity.choices, default=VulnerabilitySeverity.UNKNOWN
    )
    base_score = models.FloatField(null=True, blank=True)
    severity = models.CharField(
        max_length=8, choices=VulnerabilitySeverity.choices, default=VulnerabilitySeverity.UNKNOWN
    )
    # Why `severity` differs from `base_severity`: ["reachable", "under_attack", "not_production"].
    severity_reasons = models.JSONField(default=list, blank=True)
    first_detected = models.DateTimeField()
    last_detected = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-first_detected", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["service", "advisory", "library", "version"],
                name="services_vulnerability_unique",
            ),
            # A reason goes with muting and with nothing else.
            models.CheckConstraint(
                condition=(Q(status="muted") & ~Q(mute_reason=""))
                | (~Q(status="muted") & Q(mute_reason="")),
                name="services_vulnerability_mute_reason",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "severity"], name="services_vuln_status_sev"),
            models.Index(fields=["service", "status"], name="services_vuln_service_status"),
        ]

    def __str__(self) -> str:
        return f"{self.advisory_id} {self.library}=={self.version} on {self.service_id}"

    @property
    def is_closed(self) -> bool:
        return self.status in (self.Status.REMEDIATED, self.Status.AUTO_CLOSED)


class VulnerabilityActivity(ActivityRecord):
    """One change to a vulnerability (who, when, from, to, why): the audit trail, the digest's
    source and the notification trigger. Append-only; the actor is null for the console."""

    class Kind(models.TextChoices):
        DETECTED = "detected", "Detected"
        STATUS_CHANGED = "status_changed", "Status changed"
        AUTO_CLOSED = "auto_closed", "Auto-closed"
        REOPENED = "reopened", "Reopened"
        SEVERITY_CHANGED = "severity_changed", "Severity changed"

    vulnerability = models.ForeignKey(
        Vulnerability, on_delete=models.CASCADE, related_name="activity"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)

    class Meta(ActivityRecord.Meta):
        indexes = [models.Index(fields=["created_at"], name="services_vulnact_created")]

    def __str__(self) -> str:
        return f"{self.vulnerability_id} {self.kind} {self.from_value} -> {self.to_value}"
