"""Notification channels and rules, the outbox of notifications a signal change or a new
vulnerability writes, each delivery attempt, and weekly digest subscriptions."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from signals.models import Severity


class Channel(models.Model):
    """Where notifications go: email addresses, a Slack incoming webhook, or a generic
    webhook signed with HMAC-SHA256."""

    class Kind(models.TextChoices):
        EMAIL = "email", "Email"
        SLACK = "slack", "Slack"
        WEBHOOK = "webhook", "Webhook"

    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    # Email: the recipients, comma-separated.
    email_to = models.TextField(blank=True)
    # Slack and webhooks: the URL posted to. A Slack webhook URL is itself a secret, so pages
    # show it cut short once saved.
    url = models.URLField(max_length=2000, blank=True)
    # Webhooks: the HMAC key receivers verify signatures with; shown once, then only its end.
    secret = models.CharField(max_length=200, blank=True)
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(kind="email") & ~models.Q(email_to=""))
                | (models.Q(kind__in=["slack", "webhook"]) & ~models.Q(url="")),
                name="notifications_channel_has_target",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"


def default_severities() -> list[str]:
    return [Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL]


class NotificationRule(models.Model):
    """Which signals (and, when `vulnerabilities` is set, which new vulnerabilities) notify
    which channels. An empty list matches everything of its kind."""

    name = models.CharField(max_length=100)
    enabled = models.BooleanField(default=True)
    severities = models.JSONField(default=default_severities)
    rule_types = models.JSONField(default=list, blank=True)
    rule_ids = models.JSONField(default=list, blank=True)
    services = models.JSONField(default=list, blank=True)
    envs = models.JSONField(default=list, blank=True)
    # Also new vulnerabilities at or above the rule's severities (and of its services and
    # envs). Off by default so that the rules written before it keep meaning "signals".
    vulnerabilities = models.BooleanField(
        "Also notify new vulnerabilities",
        default=False,
        help_text="New vulnerabilities at these severities, of these services and "
        "environments. A rule limited to attack types or signal rules matches none.",
    )
    channels = models.ManyToManyField(Channel, related_name="rules")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class Notification(models.Model):
    """The outbox: one message for one channel about one signal change (its creation or an
    escalation) or one new vulnerability, written in the transaction of that change and sent
    by the workers."""

    class Event(models.TextChoices):
        CREATED = "created", "Signal created"
        ESCALATED = "escalated", "Severity escalated"
        VULNERABILITY = "vulnerability", "New vulnerability"
        TEST = "test", "Test message"

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="notifications")
    rule = models.ForeignKey(
        NotificationRule,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="notifications",
    )
    signal = models.ForeignKey(
        "signals.Signal",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="notifications",
    )
    # The change notified about; null for a test message.
    activity = models.ForeignKey(
        "signals.SignalActivity",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="notifications",
    )
    vulnerability = models.ForeignKey(
        "services.Vulnerability",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="notifications",
    )
    # The vulnerability's `detected` row (or its rise in severity) notified about.
    vulnerability_activity = models.ForeignKey(
        "services.VulnerabilityActivity",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="notifications",
    )
    event = models.CharField(max_length=16, choices=Event.choices)
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    # Set while a worker sends it; another worker leaves it alone until this has passed.
    locked_until = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # At most one message per signal change and channel, whatever the number of rules
            # that match it or workers that race.
            models.UniqueConstraint(
                fields=["activity", "channel"], name="notifications_once_per_change_and_channel"
            ),
            models.UniqueConstraint(
                fields=["vulnerability_activity", "channel"],
                name="notifications_once_per_vulnerability_change_and_channel",
            ),
            # About a signal, about a vulnerability, or (a test message) about nothing.
            models.CheckConstraint(
                condition=(
                    models.Q(vulnerability__isnull=True, vulnerability_activity__isnull=True)
                )
                | (
                    models.Q(signal__isnull=True, activity__isnull=True)
                    & models.Q(vulnerability__isnull=False, vulnerability_activity__isnull=False)
                ),
                name="notifications_about_one_thing",
            ),
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(state="pending"),
                name="notifications_due",
            )
        ]

    def __str__(self) -> str:
        return f"{self.event} -> {self.channel_id} ({self.state})"


class Delivery(models.Model):
    """One attempt to send a notification, as the delivery log shows it."""

    notification = models.ForeignKey(
        Notification, on_delete=models.CASCADE, related_name="deliveries"
    )
    attempt = models.PositiveSmallIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)
    ok = models.BooleanField(default=False)
    # The receiver's HTTP status, when it answered.
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    # Whether the failure is worth another attempt (timeouts, 429, 5xx) or not (other 4xx).
    temporary = models.BooleanField(default=False)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["notification", "attempt"], name="notifications_delivery_attempt"
            )
        ]

    def __str__(self) -> str:
        return f"{self.notification_id} #{self.attempt} {'ok' if self.ok else 'failed'}"


class DigestSubscription(models.Model):
    """A user's weekly digest: the day and hour it is sent, in the user's time zone."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="digest_subscription"
    )
    enabled = models.BooleanField(default=True)
    # 0 is Monday, as `datetime.weekday()`.
    weekday = models.PositiveSmallIntegerField(default=0)
    hour = models.PositiveSmallIntegerField(default=9)
    timezone = models.CharField(max_length=64, default="UTC")
    # The Monday (in the user's time zone) of the last week a digest went out for: claimed
    # with a conditional UPDATE, so a scheduler that fires twice sends one digest.
    last_week_sent = models.DateField(null=True, blank=True)
    last_sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(weekday__lte=6) & models.Q(hour__lte=23),
                name="notifications_digest_when_valid",
            )
        ]

    def __str__(self) -> str:
        return f"digest for {self.user_id}"
