"""State changes of detection rules."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.models import User
from signals.detection.loader import builtin_rules
from signals.detection.rules import RuleError, parse_rule, parse_rule_file
from signals.models import DetectionRule


def _builtin_ids() -> set[str]:
    return {rule.id for rule in builtin_rules()}


@transaction.atomic
def detection_rule_set_enabled(*, rule_id: str, enabled: bool, actor: User | None) -> DetectionRule:
    row = DetectionRule.objects.select_for_update().filter(rule_id=rule_id).first()
    if row is None:
        if rule_id not in _builtin_ids():
            raise DetectionRule.DoesNotExist(rule_id)
        row = DetectionRule(rule_id=rule_id, source=DetectionRule.Source.BUILTIN)
    row.enabled = enabled
    row.updated_by = actor
    row.save()
    return row


def _custom_rows(rules: list[dict[str, Any]], actor: User | None) -> list[DetectionRule]:
    builtin = _builtin_ids()
    rows = []
    for definition in rules:
        rule_id = definition["id"]
        if rule_id in builtin:
            raise ValidationError(
                f"rule {rule_id!r}: the id of a built-in rule; give custom rules their own ids"
            )
        rows.append(
            DetectionRule(
                rule_id=rule_id,
                source=DetectionRule.Source.CUSTOM,
                definition=definition,
                enabled=True,
                updated_by=actor,
            )
        )
    return rows


@transaction.atomic
def detection_rule_save(*, definition: Any, actor: User | None) -> DetectionRule:
    """Add a custom rule, or replace the custom rule with the same id."""
    try:
        parse_rule(definition)
    except RuleError as exc:
        raise ValidationError(str(exc)) from None
    (row,) = _custom_rows([definition], actor)
    DetectionRule.objects.filter(rule_id=row.rule_id, source=DetectionRule.Source.CUSTOM).delete()
    row.save()
    return row


@transaction.atomic
def detection_rule_file_import(*, document: Any, actor: User | None) -> list[DetectionRule]:
    """Load every rule of a Datadog-format rule file as custom rules: all of them, or none
    when one is invalid (the error names it)."""
    try:
        parse_rule_file(document)
    except RuleError as exc:
        raise ValidationError(str(exc)) from None
    raw_rules = document["rules"] if isinstance(document, dict) else document
    rows = _custom_rows(list(raw_rules), actor)
    ids = [row.rule_id for row in rows]
    DetectionRule.objects.filter(rule_id__in=ids, source=DetectionRule.Source.CUSTOM).delete()
    return DetectionRule.objects.bulk_create(rows)


@transaction.atomic
def detection_rule_delete(*, rule_id: str) -> None:
    deleted, _ = DetectionRule.objects.filter(
        rule_id=rule_id, source=DetectionRule.Source.CUSTOM
    ).delete()
    if not deleted:
        raise DetectionRule.DoesNotExist(rule_id)
