"""Read queries of detection rules."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Count
from django.utils import timezone

from signals.detection.loader import builtin_definitions
from signals.models import DetectionRule
from traces.models import SecurityEvent

HIT_WINDOW = timedelta(days=30)


@dataclass(slots=True)
class RuleRow:
    rule_id: str
    name: str
    type: str
    category: str
    source: str
    enabled: bool
    hits: int
    definition: dict[str, object]


def detection_rule_list(*, type: str | None = None, source: str | None = None) -> list[RuleRow]:
    """Every rule, built-in and custom, with its console hits of the last 30 days."""
    since = timezone.now() - HIT_WINDOW
    hits = dict(
        SecurityEvent.objects.filter(source=SecurityEvent.Source.CONSOLE, detected_at__gte=since)
        .values_list("rule_id")
        .annotate(n=Count("pk"))
        .values_list("rule_id", "n")
    )
    states = {row.rule_id: row for row in DetectionRule.objects.all()}
    rows = []
    definitions = dict(builtin_definitions())
    for row in states.values():
        if row.source == DetectionRule.Source.CUSTOM and isinstance(row.definition, dict):
            definitions[row.rule_id] = row.definition
    for rule_id, definition in definitions.items():
        state = states.get(rule_id)
        tags = definition.get("tags") or {}
        rows.append(
            RuleRow(
                rule_id=rule_id,
                name=str(definition.get("name", "")),
                type=str(tags.get("type", "")),
                category=str(tags.get("category", "attack_attempt")),
                source=state.source if state else DetectionRule.Source.BUILTIN,
                enabled=state.enabled if state else True,
                hits=hits.get(rule_id, 0),
                definition=definition,
            )
        )
    if type:
        rows = [row for row in rows if row.type == type]
    if source:
        rows = [row for row in rows if row.source == source]
    return sorted(rows, key=lambda row: (row.type, row.rule_id))
