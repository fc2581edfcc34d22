"""State changes of signal rules: custom rules, and built-ins switched off or tuned."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from accounts.models import User
from signals.models import SignalRule
from signals.signal_rules import (
    SignalRuleDef,
    SignalRuleError,
    builtin_signal_rules,
    parse_signal_rule,
)


class SignalRuleConflict(Exception):
    """The id is taken (a built-in rule, or a custom rule already saved)."""


class SignalRuleNotFound(Exception):
    pass


def _stored(rule: SignalRuleDef) -> dict[str, Any]:
    # The row's `enabled` decides whether the rule runs; the document does not repeat it.
    definition = rule.as_definition()
    definition.pop("enabled")
    return definition


def _parse_for(rule_id: str, definition: Any) -> SignalRuleDef:
    rule = parse_signal_rule(definition)
    if rule.id != rule_id:
        raise SignalRuleError(
            f"signal rule {rule.id!r}: id: a rule keeps its id ({rule_id!r})", field="id"
        )
    return rule


@transaction.atomic
def signal_rule_create(*, definition: Any, actor: User | None) -> SignalRule:
    """Add a custom rule. SignalRuleError names a bad field; SignalRuleConflict a taken id."""
    rule = parse_signal_rule(definition)
    if rule.id in builtin_signal_rules() or SignalRule.objects.filter(rule_id=rule.id).exists():
        raise SignalRuleConflict(rule.id)
    return SignalRule.objects.create(
        rule_id=rule.id,
        source=SignalRule.Source.CUSTOM,
        definition=_stored(rule),
        enabled=rule.enabled,
        updated_by=actor,
    )


_UNCHANGED: Any = object()


@transaction.atomic
def signal_rule_update(
    *,
    rule_id: str,
    actor: User | None,
    enabled: bool | None = None,
    definition: Any = _UNCHANGED,
) -> SignalRule:
    """Switch a rule on or off, and/or replace its definition. A built-in rule's definition is
    its tuning; `definition=None` gives it back the shipped one."""
    row = SignalRule.objects.select_for_update().filter(rule_id=rule_id).first()
    builtin = builtin_signal_rules().get(rule_id)
    if row is None:
        if builtin is None:
            raise SignalRuleNotFound(rule_id)
        row = SignalRule(rule_id=rule_id, source=SignalRule.Source.BUILTIN, enabled=builtin.enabled)
    if definition is not _UNCHANGED:
        if definition is None:
            if row.source == SignalRule.Source.CUSTOM:
                raise SignalRuleError(
                    f"signal rule {rule_id!r}: definition: a custom rule needs one",
                    field="definition",
                )
            row.definition = None
        else:
            row.definition = _stored(_parse_for(rule_id, definition))
    if enabled is not None:
        row.enabled = enabled
    row.updated_by = actor
    row.save()
    return row


@transaction.atomic
def signal_rule_delete(*, rule_id: str) -> None:
    """Delete a custom rule; its signals stay, for the record."""
    if rule_id in builtin_signal_rules():
        raise SignalRuleConflict(rule_id)
    deleted, _ = SignalRule.objects.filter(
        rule_id=rule_id, source=SignalRule.Source.CUSTOM
    ).delete()
    if not deleted:
        raise SignalRuleNotFound(rule_id)
