"""Which signals a notification rule matches, and its 7-day preview."""

from __future__ import annotations

from datetime import timedelta

import pytest

from notifications.outbox import notifications_enqueue
from notifications.selectors import (
    RuleCriteria,
    notification_rule_preview,
    signal_rule_types,
    types_of_signal,
)
from signals.models import Severity
from tests.factories import ServiceFactory
from tests.notifications.support import created, make_channel, make_rule, make_signal

pytestmark = pytest.mark.django_db


def criteria(**lists: list[str]) -> RuleCriteria:
    lists.setdefault("severities", ["medium", "high", "critical"])
    return RuleCriteria.from_lists(**lists)


def test_signal_rules_know_their_attack_types() -> None:
    types = signal_rule_types()
    assert types["sqli-attempts"] == {"sql_injection"}
    assert types["cmdi-attempts"] == {"command_injection", "shell_injection"}
    assert types["credential-stuffing"] == frozenset()
    # A rule grouping by attack type: the signal's own type.
    exploit = make_signal(rule_id="exploit", group={"rule_type": "ssrf", "service": "checkout"})
    assert types_of_signal(exploit, types) == {"ssrf"}


@pytest.mark.parametrize(
    ("lists", "matches"),
    [
        ({}, True),
        ({"severities": ["critical"]}, False),
        ({"severities": []}, False),
        ({"rule_types": ["sql_injection", "xss"]}, True),
        ({"rule_types": ["xss"]}, False),
        ({"rule_ids": ["sqli-attempts"]}, True),
        ({"rule_ids": ["xss-attempts"]}, False),
        ({"services": ["checkout", "search"]}, True),
        ({"services": ["search"]}, False),
        ({"envs": ["prod"]}, True),
        ({"envs": ["staging"]}, False),
        ({"rule_types": ["sql_injection"], "services": ["checkout"], "envs": ["prod"]}, True),
    ],
)
def test_rule_criteria(lists: dict[str, list[str]], matches: bool) -> None:
    signal = make_signal(severity=Severity.HIGH)
    types = types_of_signal(signal, signal_rule_types())
    assert criteria(**lists).matches(signal, severity="high", types=types) is matches


def test_enqueue_applies_every_criterion() -> None:
    staging = ServiceFactory.create(name="checkout", env="staging")
    sqli, xss, other = (make_channel(name=n) for n in ("sqli", "xss", "staging"))
    make_rule(sqli, name="sqli", rule_types=["sql_injection"])
    make_rule(xss, name="xss", rule_types=["xss"])
    make_rule(other, name="staging only", envs=["staging"])
    prod_ids = notifications_enqueue(activity=created(make_signal()))
    staging_ids = notifications_enqueue(
        activity=created(make_signal(service=staging, env="staging"))
    )
    from notifications.models import Notification

    assert {Notification.objects.get(pk=pk).channel.name for pk in prod_ids} == {"sqli"}
    assert {Notification.objects.get(pk=pk).channel.name for pk in staging_ids} == {
        "sqli",
        "staging",
    }


def test_preview_lists_the_last_seven_days_matches() -> None:
    recent = make_signal(severity=Severity.HIGH, title="recent high")
    make_signal(severity=Severity.LOW, title="recent low")
    make_signal(severity=Severity.HIGH, title="old", created_at_offset=timedelta(days=8))
    search = ServiceFactory.create(name="search", env="prod")
    other = make_signal(severity=Severity.CRITICAL, title="search", service=search)
    preview = notification_rule_preview(criteria=criteria())
    assert [s.title for s in preview.signals] == ["search", "recent high"]
    assert preview.total == 2
    only_checkout = notification_rule_preview(criteria=criteria(services=["checkout"]))
    assert [s.pk for s in only_checkout.signals] == [recent.pk]
    by_type = notification_rule_preview(criteria=criteria(rule_types=["sql_injection"]))
    assert {s.pk for s in by_type.signals} == {recent.pk, other.pk}
    assert notification_rule_preview(criteria=criteria(rule_types=["xss"])).total == 0
