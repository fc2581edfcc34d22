from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.db.models.functions import Substr

from accounts.models import APIKey
from services.models import Service


class IntakeBatch(models.Model):
    """One request body as the intake accepted it, kept until a worker has processed it.

    The intake answers once this row is committed; everything after happens in workers. A batch
    is processed inside one transaction that also marks it done, so a worker that dies half-way
    leaves it pending, and the sweep hands it to another worker.
    """

    class Kind(models.TextChoices):
        TRACES_V04 = "traces_v04", "Agent protocol v0.4 traces"
        TRACES_V05 = "traces_v05", "Agent protocol v0.5 traces"
        TRACES_JSON = "traces_json", "JSON traces"
        TELEMETRY = "telemetry", "Tracer telemetry"

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    # The body after any Content-Encoding was removed.
    body = models.BinaryField()
    # The request headers processing needs (Datadog-Meta-*, telemetry request type...).
    headers = models.JSONField(default=dict)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    api_key = models.ForeignKey(
        APIKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    span_count = models.PositiveIntegerField(default=0)
    received_at = models.DateTimeField(auto_now_add=True)
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    processed_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        indexes = [
            # The sweep's query: pending batches, oldest first.
            models.Index(
                fields=["received_at"],
                condition=Q(state="pending"),
                name="traces_batch_pending_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk} ({self.state})"


class Span(models.Model):
    # 128-bit trace ids (`_dd.p.tid` + the low 64 bits) and 64-bit span ids, as lowercase hex.
    trace_id = models.CharField(max_length=32)
    span_id = models.CharField(max_length=16)
    parent_id = models.CharField(max_length=16, blank=True)
    service_name = models.CharField(max_length=200)
    env = models.CharField(max_length=100, blank=True)
    # Set on service-entry spans, which the catalog counts.
    service = models.ForeignKey(
        Service, null=True, blank=True, on_delete=models.CASCADE, related_name="spans"
    )
    name = models.CharField(max_length=200)
    resource = models.TextField(blank=True)
    type = models.CharField(max_length=32, blank=True)
    start = models.DateTimeField()
    start_ns = models.BigIntegerField()
    duration_ns = models.BigIntegerField()
    error = models.BooleanField(default=False)
    meta = models.JSONField(default=dict)
    metrics = models.JSONField(default=dict)
    meta_struct = models.JSONField(default=dict)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["trace_id", "span_id"], name="traces_span_unique")
        ]
        indexes = [
            models.Index(fields=["start"], name="traces_span_start_idx"),
            models.Index(fields=["service", "start"], name="traces_span_service_start_idx"),
            models.Index(Substr("trace_id", 17), name="traces_span_trace_low_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.service_name} {self.name} {self.trace_id}/{self.span_id}"


class SecurityEvent(models.Model):
    """One rule that matched on one span: an attack attempt, a vulnerability trigger or a
    security response (a block)."""

    class Source(models.TextChoices):
        TRACER = "tracer", "Tracer (in-app WAF)"
        CONSOLE = "console", "Console detection"

    trace_id = models.CharField(max_length=32)
    span_id = models.CharField(max_length=16)
    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="security_events")
    env = models.CharField(max_length=100, blank=True)
    source = models.CharField(max_length=8, choices=Source.choices)
    rule_id = models.CharField(max_length=100)
    rule_name = models.CharField(max_length=300, blank=True)
    rule_type = models.CharField(max_length=64, blank=True)
    rule_category = models.CharField(max_length=64, blank=True)
    rule_module = models.CharField(max_length=64, blank=True)
    rule_tags = models.JSONField(default=dict)
    on_match = models.JSONField(default=list)
    # Each match: {"operator", "operator_value", "parameters": [{address, key_path, value,
    # highlight} or the RASP form {resource, params, db_type, highlight}]}.
    rule_matches = models.JSONField(default=list)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    # Where the client IP came from: a span tag or a request header name.
    client_ip_source = models.CharField(max_length=64, blank=True)
    user = models.CharField(max_length=200, blank=True)
    method = models.CharField(max_length=16, blank=True)
    route = models.CharField(max_length=500, blank=True)
    url = models.TextField(blank=True)
    user_agent = models.TextField(blank=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    blocked = models.BooleanField(default=False)
    security_response_id = models.CharField(max_length=64, blank=True)
    # RASP: the stack of `meta_struct["_dd.stack"]["exploit"]` this trigger points at.
    stack_trace = models.JSONField(null=True, blank=True)
    detected_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    # Set once the signal rules have seen the event (signals/evaluation.py claims the events
    # still null); a partial index keeps finding them cheap.
    evaluated_at = models.DateTimeField(null=True, blank=True)
    # A passlist entry matched the event: it is kept, and counts toward no signal.
    excluded_by = models.ForeignKey(
        "signals.PassFilter",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="security_events",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["trace_id", "span_id", "rule_id", "source"],
                name="traces_securityevent_unique",
            )
        ]
        indexes = [
            models.Index(fields=["detected_at"], name="traces_event_detected_idx"),
            models.Index(fields=["service", "detected_at"], name="traces_event_service_idx"),
            models.Index(fields=["rule_type", "detected_at"], name="traces_event_type_idx"),
            models.Index(fields=["client_ip", "detected_at"], name="traces_event_ip_idx"),
            # The signal rules' windows: most group by service and client IP.
            models.Index(
                fields=["service", "client_ip", "detected_at"], name="traces_event_svc_ip_idx"
            ),
            models.Index(
                fields=["id"],
                condition=models.Q(evaluated_at__isnull=True),
                name="traces_event_unevaluated",
            ),
        ]
        ordering = ["-detected_at", "-id"]

    def __str__(self) -> str:
        return f"{self.rule_id} on {self.trace_id}/{self.span_id}"

    @property
    def parameters(self) -> list[dict[str, object]]:
        return [
            parameter
            for match in self.rule_matches
            if isinstance(match, dict)
            for parameter in match.get("parameters") or []
            if isinstance(parameter, dict)
        ]


class BusinessLogicEvent(models.Model):
    """A user event the application reported through the tracer's SDK: a login, a signup or a
    custom business event."""

    class Kind(models.TextChoices):
        LOGIN_SUCCESS = "login_success", "Login success"
        LOGIN_FAILURE = "login_failure", "Login failure"
        SIGNUP = "signup", "Signup"
        CUSTOM = "custom", "Custom event"

    trace_id = models.CharField(max_length=32)
    span_id = models.CharField(max_length=16)
    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="business_events")
    env = models.CharField(max_length=100, blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # The custom event's name; the kind again for the others.
    name = models.CharField(max_length=200)
    user_id = models.CharField(max_length=200, blank=True)
    user_login = models.CharField(max_length=200, blank=True)
    # Login failures say whether the account exists.
    user_exists = models.BooleanField(null=True, blank=True)
    metadata = models.JSONField(default=dict)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    occurred_at = models.DateTimeField()
    # As on SecurityEvent: seen by the signal rules (credential stuffing, brute force), and
    # excluded by a passlist entry (its service, env, IP and user scopes apply).
    evaluated_at = models.DateTimeField(null=True, blank=True)
    excluded_by = models.ForeignKey(
        "signals.PassFilter",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="business_events",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["trace_id", "span_id", "kind", "name"],
                name="traces_businessevent_unique",
            )
        ]
        indexes = [
            models.Index(fields=["occurred_at"], name="traces_business_occurred_idx"),
            models.Index(
                fields=["kind", "client_ip", "occurred_at"], name="traces_business_ip_idx"
            ),
            models.Index(
                fields=["id"],
                condition=models.Q(evaluated_at__isnull=True),
                name="traces_business_unevaluated",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.user_login or self.user_id}"
