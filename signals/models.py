from __future__ import annotations

from datetime import date

from django.conf import settings
from django.db import connection, models


class DetectionRule(models.Model):
    """A detection rule's state: custom rules with their definition, and any rule an admin or
    member switched off. Built-in rules are read from the shipped rule file and appear here
    only once their state changes."""

    class Source(models.TextChoices):
        BUILTIN = "builtin", "Built-in"
        CUSTOM = "custom", "Custom"

    rule_id = models.CharField(max_length=100, unique=True)
    source = models.CharField(max_length=8, choices=Source.choices)
    # The rule in Datadog's appsec-event-rules format; custom rules only.
    definition = models.JSONField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["rule_id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(source="builtin", definition__isnull=True)
                | models.Q(source="custom", definition__isnull=False),
                name="signals_detectionrule_definition_iff_custom",
            )
        ]

    def __str__(self) -> str:
        return self.rule_id


class DetectionStats(models.Model):
    """Per-day counters of the console's detection: requests evaluated, time spent, and
    requests that ran past the time budget (whose remaining rules were skipped)."""

    day = models.DateField(unique=True)
    requests = models.BigIntegerField(default=0)
    matches = models.BigIntegerField(default=0)
    budget_overruns = models.BigIntegerField(default=0)
    total_us = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-day"]

    def __str__(self) -> str:
        return f"{self.day}: {self.requests} requests, {self.budget_overruns} overruns"

    @classmethod
    def add(cls, *, day: date, requests: int, matches: int, overruns: int, total_us: int) -> None:
        """Add to a day's counters in one statement, whichever worker writes first."""
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO signals_detectionstats"
                " (day, requests, matches, budget_overruns, total_us)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (day) DO UPDATE SET"
                " requests = signals_detectionstats.requests + excluded.requests,"
                " matches = signals_detectionstats.matches + excluded.matches,"
                " budget_overruns = signals_detectionstats.budget_overruns"
                " + excluded.budget_overruns,"
                " total_us = signals_detectionstats.total_us + excluded.total_us",
                [day, requests, matches, overruns, total_us],
            )
