"""The workers' evaluation of the signal rules: every built-in rule's thresholds and cases,
groups, windows, the passlist, reopening, escalation and idempotency."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from services.models import Service
from signals.evaluation import signals_evaluate
from signals.models import PassFilter, Signal, SignalActivity
from signals.signal_rules import builtin_signal_rules
from tests.factories import ServiceFactory
from tests.traces.replay import TRACE_CAPTURES, process_pending, send
from traces.models import BusinessLogicEvent, SecurityEvent

pytestmark = pytest.mark.django_db

_ids = itertools.count(1)


@pytest.fixture
def now() -> datetime:
    return timezone.now().replace(microsecond=0)


@pytest.fixture
def web(db: None) -> Service:
    return ServiceFactory.create(name="web-store", env="prod")


def security_events(
    service: Service,
    count: int = 1,
    *,
    at: datetime,
    ip: str | None = "203.0.113.5",
    rule_type: str = "sql_injection",
    category: str = "attack_attempt",
    rule_id: str = "",
    route: str = "/search",
    status: int | None = 200,
    blocked: bool = False,
    tool: str = "",
    user: str = "",
    matches_per_request: int = 1,
) -> list[SecurityEvent]:
    """`count` requests, each matching `matches_per_request` rules, one second apart up to `at`."""
    rows = []
    for index in range(count):
        request = next(_ids)
        for match in range(matches_per_request):
            rows.append(
                SecurityEvent(
                    trace_id=f"{request:032x}",
                    span_id=f"{request:016x}",
                    service=service,
                    env=service.env,
                    source="tracer" if match == 0 else "console",
                    rule_id=rule_id or f"test-{rule_type}-{match}",
                    rule_type=rule_type,
                    rule_category=category,
                    rule_tags={"type": rule_type, **({"tool_name": tool} if tool else {})},
                    client_ip=ip,
                    user=user,
                    route=route,
                    url=f"https://shop.example.com{route or '/nowhere'}",
                    status_code=status,
                    blocked=blocked,
                    detected_at=at - timedelta(seconds=count - 1 - index),
                )
            )
    return SecurityEvent.objects.bulk_create(rows)


def business_events(
    service: Service,
    count: int = 1,
    *,
    at: datetime,
    kind: str = "login_failure",
    ip: str = "198.51.100.9",
    login: str | None = "alice",
    user_id: str = "",
    user_exists: bool | None = None,
) -> list[BusinessLogicEvent]:
    """`count` events one second apart up to `at`; `login=None` gives each its own login."""
    rows = []
    for index in range(count):
        n = next(_ids)
        rows.append(
            BusinessLogicEvent(
                trace_id=f"{n:032x}",
                span_id=f"{n:016x}",
                service=service,
                env=service.env,
                kind=kind,
                name=kind,
                user_id=user_id,
                user_login=login if login is not None else f"user{index}",
                user_exists=user_exists,
                client_ip=ip,
                occurred_at=at - timedelta(seconds=count - 1 - index),
            )
        )
    return BusinessLogicEvent.objects.bulk_create(rows)


def signals_of(rule_id: str) -> list[Signal]:
    return list(Signal.objects.filter(rule_id=rule_id).order_by("pk"))


def only_signal(rule_id: str) -> Signal:
    found = signals_of(rule_id)
    assert len(found) == 1, [(s.rule_id, s.group_key) for s in Signal.objects.all()]
    return found[0]


def kinds(signal: Signal) -> list[tuple[str, str, str]]:
    return [
        (a.kind, a.from_value, a.to_value)
        for a in SignalActivity.objects.filter(signal=signal).order_by("pk")
    ]


# --- security scanner -------------------------------------------------------------------------


def test_scanner_on_missing_paths_only_is_info(web: Service, now: datetime) -> None:
    security_events(web, 3, at=now, rule_type="security_scanner", route="", status=404)
    signals_evaluate(now=now)
    signal = only_signal("security-scanner")
    assert signal.severity == "info"
    assert signal.title == "Security scanner detected on web-store"
    assert signal.group == {"service": "web-store", "env": "prod"}
    assert signal.service == web
    assert signal.env == "prod"
    assert signal.event_count == 3
    assert kinds(signal) == [("created", "", "info")]


def test_scanner_reaching_a_real_route_is_low(web: Service, now: datetime) -> None:
    security_events(web, 1, at=now, rule_type="security_scanner", route="/", status=200)
    signals_evaluate(now=now)
    assert only_signal("security-scanner").severity == "low"


def test_scanner_route_answered_404_stays_info(web: Service, now: datetime) -> None:
    # A route matched but the application answered 404 (an unknown product id): not a hit.
    security_events(web, 2, at=now, rule_type="security_scanner", route="/p/<id>", status=404)
    signals_evaluate(now=now)
    assert only_signal("security-scanner").severity == "info"


def test_scanner_causing_server_errors_is_medium(web: Service, now: datetime) -> None:
    security_events(web, 5, at=now, rule_type="security_scanner", route="", status=404)
    security_events(web, 1, at=now, rule_type="security_scanner", route="/api", status=502)
    signals_evaluate(now=now)
    assert only_signal("security-scanner").severity == "medium"


def test_getting_started_simulation_gives_one_scanner_signal_per_service(
    web: Service, now: datetime
) -> None:
    """200 requests with the test scanner's user agent against existing and missing routes,
    from several addresses: one signal for the service; a second run updates it."""
    other = ServiceFactory.create(name="billing", env="prod")
    for ip in ("127.0.0.1", "198.51.100.7"):
        security_events(web, 50, at=now, ip=ip, rule_type="security_scanner", route="/")
        security_events(web, 50, at=now, ip=ip, rule_type="security_scanner", route="", status=404)
    security_events(other, 1, at=now, rule_type="security_scanner", route="", status=404)
    signals_evaluate(now=now)
    signal = Signal.objects.get(rule_id="security-scanner", service=web)
    assert signal.event_count == 200
    assert signal.severity == "low"
    assert set(signal.attackers["ips"]) == {"127.0.0.1", "198.51.100.7"}
    assert signal.attackers["ips"]["127.0.0.1"]["count"] == 100
    assert signal.routes == {"/": 100}
    assert len(signal.traces) == 100
    assert Signal.objects.get(rule_id="security-scanner", service=other).severity == "info"

    later = now + timedelta(minutes=5)
    security_events(web, 100, at=later, ip="127.0.0.1", rule_type="security_scanner", route="/")
    security_events(
        web, 100, at=later, ip="127.0.0.1", rule_type="security_scanner", route="", status=404
    )
    result = signals_evaluate(now=later)
    assert result.signals_created == 0
    assert result.signals_updated == 1
    signal.refresh_from_db()
    assert Signal.objects.filter(rule_id="security-scanner", service=web).count() == 1
    assert signal.event_count == 400
    assert signal.last_seen == later
    assert signal.attackers["ips"]["127.0.0.1"]["count"] == 300
    assert signal.routes == {"/": 200}
    # Newest first, capped.
    newest = set(
        SecurityEvent.objects.filter(service=web, detected_at=later).values_list(
            "span_id", flat=True
        )
    )
    assert len(signal.traces) == 100
    assert signal.traces[0][1] in newest


def test_real_captures_give_the_expected_signals(client: Client) -> None:
    """The tracer's own findings, through the real intake: scanners, tools, RASP exploits and
    Log4Shell from the team's captures."""
    for name in TRACE_CAPTURES:
        send(client, name)
    process_pending()
    result = signals_evaluate()
    assert result.security_events == SecurityEvent.objects.count()
    by_rule: dict[str, list[Signal]] = {}
    for signal in Signal.objects.all():
        by_rule.setdefault(signal.rule_id, []).append(signal)
    scanner = by_rule["security-scanner"]
    assert [s.title for s in scanner] == ["Security scanner detected on web-store"]
    assert scanner[0].severity == "low"  # the canary scanner reached "/" and "/products"
    exploits = {s.group["route"]: s.severity for s in by_rule["exploit"]}
    assert exploits == {"/db": "critical", "/read": "critical", "/shell": "critical"}
    tools = {s.group["client_ip"]: s.severity for s in by_rule["attack-tool"]}
    # localhost ran sqlmap and then RASP saw exploits from it; Nikto came from elsewhere.
    assert tools == {"127.0.0.1": "high", "198.51.100.23": "low"}
    assert [s.severity for s in by_rule["log4shell"]] == ["low"]
    assert signals_evaluate().events == 0


# --- attack tools -----------------------------------------------------------------------------


def test_one_attack_tool_is_low(web: Service, now: datetime) -> None:
    security_events(web, 3, at=now, rule_type="attack_tool", tool="SQLmap")
    signals_evaluate(now=now)
    signal = only_signal("attack-tool")
    assert signal.severity == "low"
    assert signal.title == "Attack tool used against web-store from 203.0.113.5"


def test_several_attack_tools_are_medium(web: Service, now: datetime) -> None:
    security_events(web, 1, at=now, rule_type="attack_tool", tool="SQLmap")
    security_events(web, 1, at=now, rule_type="attack_tool", tool="Nikto")
    signals_evaluate(now=now)
    assert only_signal("attack-tool").severity == "medium"


def test_attack_tool_getting_a_server_error_is_high(web: Service, now: datetime) -> None:
    security_events(web, 1, at=now, rule_type="attack_tool", tool="SQLmap", status=500)
    signals_evaluate(now=now)
    assert only_signal("attack-tool").severity == "high"


def test_attack_tool_whose_attacker_triggers_rasp_is_high(web: Service, now: datetime) -> None:
    security_events(web, 1, at=now, rule_type="attack_tool", tool="SQLmap")
    security_events(web, 1, at=now, rule_type="sql_injection", category="vulnerability_trigger")
    signals_evaluate(now=now)
    assert only_signal("attack-tool").severity == "high"


def test_rasp_alone_is_no_attack_tool_signal(web: Service, now: datetime) -> None:
    security_events(web, 1, at=now, rule_type="sql_injection", category="vulnerability_trigger")
    signals_evaluate(now=now)
    assert signals_of("attack-tool") == []
    assert only_signal("exploit").severity == "critical"


# --- bursts of attempts -----------------------------------------------------------------------

BURSTS = [
    ("sqli-attempts", "sql_injection", 10, 100),
    ("xss-attempts", "xss", 10, 100),
    ("lfi-attempts", "lfi", 10, 100),
    ("ssrf-attempts", "ssrf", 5, 50),
    ("cmdi-attempts", "command_injection", 5, 50),
    ("cmdi-attempts", "shell_injection", 5, 50),
]


@pytest.mark.parametrize(("rule_id", "rule_type", "low", "medium"), BURSTS)
def test_burst_thresholds(
    web: Service, now: datetime, rule_id: str, rule_type: str, low: int, medium: int
) -> None:
    # Below: each request matched two rules (tracer and console), and still counts once.
    security_events(web, low - 1, at=now, rule_type=rule_type, matches_per_request=2)
    signals_evaluate(now=now)
    assert signals_of(rule_id) == []

    security_events(web, 1, at=now + timedelta(seconds=1), rule_type=rule_type)
    signals_evaluate(now=now)
    signal = only_signal(rule_id)
    assert signal.severity == "low"
    assert signal.group == {"service": "web-store", "env": "prod", "client_ip": "203.0.113.5"}
    # The signal holds every event of the window that crossed the threshold.
    assert signal.event_count == 2 * (low - 1) + 1

    security_events(web, medium - low, at=now + timedelta(seconds=2), rule_type=rule_type)
    signals_evaluate(now=now)
    signal.refresh_from_db()
    assert signal.severity == "medium"
    assert kinds(signal) == [("created", "", "low"), ("severity_changed", "low", "medium")]


def test_bursts_are_per_attacker_and_ignore_vulnerability_triggers(
    web: Service, now: datetime
) -> None:
    security_events(web, 6, at=now, ip="203.0.113.1")
    security_events(web, 6, at=now, ip="203.0.113.2")
    security_events(web, 6, at=now, ip="203.0.113.1", category="vulnerability_trigger")
    security_events(web, 20, at=now, ip=None)  # no address: nobody to attribute it to
    signals_evaluate(now=now)
    assert signals_of("sqli-attempts") == []


def test_burst_window_edges(web: Service, now: datetime) -> None:
    """The window is the 600 s ending at the group's newest event, start excluded."""
    security_events(web, 9, at=now - timedelta(seconds=600))
    security_events(web, 1, at=now)
    signals_evaluate(now=now)
    assert signals_of("sqli-attempts") == []  # 9 events exactly 600 s before: outside

    security_events(web, 1, at=now + timedelta(seconds=1))
    signals_evaluate(now=now)
    # Ending 1 s later, the window starts 599 s after the 9th event; the first 8 were 1-8 s
    # before it, also outside. Only 3 events: still nothing.
    assert signals_of("sqli-attempts") == []

    security_events(web, 8, at=now + timedelta(seconds=2))
    signals_evaluate(now=now)
    assert only_signal("sqli-attempts").severity == "low"  # 1 + 1 + 8 in the window


def test_thresholds_add_up_across_rounds(web: Service, now: datetime) -> None:
    security_events(web, 5, at=now)
    assert signals_evaluate(now=now).security_events == 5
    security_events(web, 5, at=now + timedelta(seconds=30))
    signals_evaluate(now=now)
    assert only_signal("sqli-attempts").event_count == 10


def test_batches_smaller_than_the_backlog(web: Service, now: datetime) -> None:
    security_events(web, 25, at=now)
    result = signals_evaluate(now=now, batch_size=4)
    assert result.security_events == 25
    signal = only_signal("sqli-attempts")
    assert signal.event_count == 25
    assert not SecurityEvent.objects.filter(evaluated_at__isnull=True).exists()


def test_limit_leaves_the_rest_for_the_next_run(web: Service, now: datetime) -> None:
    security_events(web, 12, at=now)
    assert signals_evaluate(now=now, limit=5, batch_size=2).security_events == 5
    assert SecurityEvent.objects.filter(evaluated_at__isnull=True).count() == 7
    assert signals_evaluate(now=now).security_events == 7


# --- exploits and Log4Shell -------------------------------------------------------------------


def test_rasp_vulnerability_trigger_is_critical(web: Service, now: datetime) -> None:
    security_events(web, 1, at=now, route="/db", category="vulnerability_trigger")
    signals_evaluate(now=now)
    signal = only_signal("exploit")
    assert signal.severity == "critical"
    assert signal.title == "Vulnerability exploited: sql_injection on web-store /db"


def test_attack_with_a_server_error_is_high(web: Service, now: datetime) -> None:
    security_events(web, 1, at=now, route="/db", status=500)
    security_events(web, 1, at=now, rule_type="security_scanner", route="/x", status=500)
    signals_evaluate(now=now)
    signal = only_signal("exploit")
    assert signal.severity == "high"
    assert signal.group["route"] == "/db"


def test_attack_answered_normally_is_no_exploit(web: Service, now: datetime) -> None:
    security_events(web, 3, at=now, route="/db", status=200)
    security_events(web, 3, at=now, route="/db", status=None)
    signals_evaluate(now=now)
    assert signals_of("exploit") == []


def test_exploit_escalates_from_high_to_critical(web: Service, now: datetime) -> None:
    security_events(web, 1, at=now, route="/db", status=500)
    signals_evaluate(now=now)
    security_events(
        web, 1, at=now + timedelta(seconds=5), route="/db", category="vulnerability_trigger"
    )
    signals_evaluate(now=now)
    signal = only_signal("exploit")
    assert signal.severity == "critical"
    assert kinds(signal) == [("created", "", "high"), ("severity_changed", "high", "critical")]
    activity = SignalActivity.objects.get(signal=signal, kind="severity_changed")
    assert activity.actor is None


def test_log4shell_attempts(web: Service, now: datetime) -> None:
    security_events(web, 1, at=now, rule_id="sqr-000-017", rule_type="exploit_detection")
    security_events(web, 5, at=now, rule_id="dog-000-002", rule_type="java_code_injection")
    signals_evaluate(now=now)
    assert only_signal("log4shell").severity == "low"
    security_events(
        web, 9, at=now + timedelta(seconds=10), rule_id="sqr-000-017", rule_type="exploit_detection"
    )
    signals_evaluate(now=now)
    assert only_signal("log4shell").severity == "medium"


# --- logins -----------------------------------------------------------------------------------


def test_credential_stuffing(web: Service, now: datetime) -> None:
    business_events(web, 9, at=now, login=None)  # 9 accounts
    business_events(web, 5, at=now, login="user0")  # the same account again
    signals_evaluate(now=now)
    assert signals_of("credential-stuffing") == []

    business_events(web, 1, at=now + timedelta(seconds=1), login="user9")
    signals_evaluate(now=now)
    signal = only_signal("credential-stuffing")
    assert signal.severity == "low"
    assert signal.title == "Credential stuffing on web-store from 198.51.100.9"
    assert signal.attackers["ips"]["198.51.100.9"]["count"] == 15
    assert len(signal.attackers["users"]) == 10

    business_events(web, 1, at=now + timedelta(seconds=2), kind="login_success", login="user3")
    signals_evaluate(now=now)
    signal.refresh_from_db()
    assert signal.severity == "critical"
    assert kinds(signal)[-1] == ("severity_changed", "low", "critical")


def test_a_success_alone_is_no_credential_stuffing(web: Service, now: datetime) -> None:
    business_events(web, 3, at=now, kind="login_success", login=None)
    signals_evaluate(now=now)
    assert Signal.objects.count() == 0


def test_brute_force_on_one_account(web: Service, now: datetime) -> None:
    business_events(web, 10, at=now, ip="198.51.100.1")
    business_events(web, 9, at=now, ip="198.51.100.2")
    signals_evaluate(now=now)
    assert signals_of("brute-force") == []

    business_events(web, 1, at=now + timedelta(seconds=1), ip="198.51.100.3")
    signals_evaluate(now=now)
    signal = only_signal("brute-force")
    assert signal.severity == "low"
    assert signal.title == "Brute force on account alice of web-store"
    assert set(signal.attackers["ips"]) == {"198.51.100.1", "198.51.100.2", "198.51.100.3"}
    # One account from many addresses is no credential stuffing.
    assert signals_of("credential-stuffing") == []


def test_brute_force_on_an_existing_account_is_medium(web: Service, now: datetime) -> None:
    business_events(web, 20, at=now, user_exists=True)
    signals_evaluate(now=now)
    assert only_signal("brute-force").severity == "medium"


def test_brute_force_then_success_is_high(web: Service, now: datetime) -> None:
    business_events(web, 20, at=now, user_exists=False)
    # Successes name the account by id and login; the login joins them to the failures.
    business_events(web, 1, at=now + timedelta(seconds=1), kind="login_success", user_id="u-1001")
    signals_evaluate(now=now)
    assert only_signal("brute-force").severity == "high"


def test_logins_without_a_user_are_not_grouped(web: Service, now: datetime) -> None:
    business_events(web, 30, at=now, login="")
    signals_evaluate(now=now)
    assert signals_of("brute-force") == []


# --- blocked attackers ------------------------------------------------------------------------


def test_blocked_attacker_who_keeps_trying(web: Service, now: datetime) -> None:
    security_events(
        web, 19, at=now, rule_type="block_ip", category="security_response", blocked=True
    )
    security_events(web, 30, at=now)  # not blocked
    signals_evaluate(now=now)
    assert signals_of("blocked-attacker") == []
    security_events(web, 1, at=now + timedelta(seconds=1), blocked=True, status=403)
    signals_evaluate(now=now)
    assert only_signal("blocked-attacker").severity == "low"
    security_events(
        web, 180, at=now + timedelta(seconds=2), rule_type="block_ip", blocked=True, status=403
    )
    signals_evaluate(now=now)
    assert only_signal("blocked-attacker").severity == "medium"


# --- passlist ---------------------------------------------------------------------------------


def test_passlisted_events_are_marked_and_count_toward_nothing(web: Service, now: datetime) -> None:
    entry = PassFilter.objects.create(ip="203.0.113.0/24", reason="our pentest")
    security_events(web, 30, at=now, rule_type="security_scanner")
    security_events(web, 30, at=now)
    result = signals_evaluate(now=now)
    assert result.excluded == 60
    assert Signal.objects.count() == 0
    assert SecurityEvent.objects.filter(excluded_by=entry).count() == 60
    assert not SecurityEvent.objects.filter(evaluated_at__isnull=True).exists()

    # Another attacker's events in the same window do not add the excluded ones.
    security_events(web, 9, at=now, ip="198.51.100.5")
    signals_evaluate(now=now)
    assert signals_of("sqli-attempts") == []


def test_expired_pass_filter_no_longer_applies(web: Service, now: datetime) -> None:
    PassFilter.objects.create(
        ip="203.0.113.5", reason="pentest last week", expires_at=now - timedelta(seconds=1)
    )
    security_events(web, 10, at=now)
    result = signals_evaluate(now=now)
    assert result.excluded == 0
    assert only_signal("sqli-attempts").severity == "low"


def test_pass_filter_scopes_apply_to_business_events(web: Service, now: datetime) -> None:
    entry = PassFilter.objects.create(user="alice", reason="QA account")
    business_events(web, 25, at=now)
    signals_evaluate(now=now)
    assert BusinessLogicEvent.objects.filter(excluded_by=entry).count() == 25
    assert Signal.objects.count() == 0


# --- reopening, idempotency -------------------------------------------------------------------


def _archive(signal: Signal, at: datetime) -> None:
    Signal.objects.filter(pk=signal.pk).update(
        status=Signal.Status.ARCHIVED, archive_reason="resolved", archived_at=at
    )


def test_signal_archived_within_30_days_reopens(web: Service, now: datetime) -> None:
    security_events(web, 10, at=now - timedelta(days=10))
    signals_evaluate(now=now - timedelta(days=10))
    signal = only_signal("sqli-attempts")
    _archive(signal, now - timedelta(days=9))

    security_events(web, 100, at=now)
    result = signals_evaluate(now=now)
    assert result.signals_reopened == 1
    assert result.signals_created == 0
    signal.refresh_from_db()
    assert signal.status == "open"
    assert signal.archive_reason == ""
    assert signal.archived_at is None
    assert signal.event_count == 110
    assert signal.severity == "medium"
    assert kinds(signal) == [
        ("created", "", "low"),
        ("reopened", "archived", "open"),
        ("severity_changed", "low", "medium"),
    ]
    reopened = SignalActivity.objects.get(signal=signal, kind="reopened")
    assert reopened.actor is None
    assert "resolved" in reopened.message


def test_signal_archived_more_than_30_days_ago_gives_a_new_one(web: Service, now: datetime) -> None:
    security_events(web, 10, at=now - timedelta(days=40))
    signals_evaluate(now=now - timedelta(days=40))
    old = only_signal("sqli-attempts")
    _archive(old, now - timedelta(days=31))

    security_events(web, 10, at=now)
    signals_evaluate(now=now)
    new = Signal.objects.exclude(pk=old.pk).get(rule_id="sqli-attempts")
    assert new.status == "open"
    assert new.event_count == 10
    old.refresh_from_db()
    assert old.status == "archived"


def test_archived_signal_does_not_reopen_below_the_threshold(web: Service, now: datetime) -> None:
    security_events(web, 10, at=now - timedelta(days=2))
    signals_evaluate(now=now - timedelta(days=2))
    signal = only_signal("sqli-attempts")
    _archive(signal, now - timedelta(days=1))
    security_events(web, 2, at=now)
    signals_evaluate(now=now)
    signal.refresh_from_db()
    assert signal.status == "archived"


def test_open_signal_follows_the_attack_below_the_threshold(web: Service, now: datetime) -> None:
    security_events(web, 10, at=now)
    signals_evaluate(now=now)
    security_events(web, 2, at=now + timedelta(hours=2))
    signals_evaluate(now=now)
    signal = only_signal("sqli-attempts")
    assert signal.event_count == 12
    assert signal.last_seen == now + timedelta(hours=2)
    assert signal.severity == "low"


def test_severity_never_goes_down(web: Service, now: datetime) -> None:
    security_events(web, 100, at=now)
    signals_evaluate(now=now)
    security_events(web, 10, at=now + timedelta(hours=1))
    signals_evaluate(now=now)
    signal = only_signal("sqli-attempts")
    assert signal.severity == "medium"
    assert [k for k, _, _ in kinds(signal)] == ["created"]


def test_evaluating_twice_changes_nothing(web: Service, now: datetime) -> None:
    security_events(web, 100, at=now, rule_type="security_scanner")
    security_events(web, 100, at=now)
    business_events(web, 20, at=now)
    first = signals_evaluate(now=now)
    assert first.signals_created == 3
    state = list(Signal.objects.values().order_by("pk"))
    activity = SignalActivity.objects.count()
    second = signals_evaluate(now=now)
    assert second.events == 0
    assert second.signals_updated == 0
    assert list(Signal.objects.values().order_by("pk")) == state
    assert SignalActivity.objects.count() == activity


def test_disabled_rule_is_not_evaluated(web: Service, now: datetime) -> None:
    from signals.models import SignalRule

    SignalRule.objects.create(rule_id="sqli-attempts", source="builtin", enabled=False)
    security_events(web, 100, at=now)
    signals_evaluate(now=now)
    assert signals_of("sqli-attempts") == []


def test_every_builtin_rule_has_a_test_here() -> None:
    tested = {
        "security-scanner",
        "attack-tool",
        "sqli-attempts",
        "xss-attempts",
        "lfi-attempts",
        "ssrf-attempts",
        "cmdi-attempts",
        "exploit",
        "log4shell",
        "credential-stuffing",
        "brute-force",
        "blocked-attacker",
    }
    assert set(builtin_signal_rules()) == tested


def test_a_signal_created_meanwhile_is_updated_not_duplicated(
    web: Service, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker created the group's signal after this round looked: the one-open-signal
    constraint refuses the second, and the round updates the first instead."""
    from signals import evaluation

    security_events(web, 10, at=now)
    signals_evaluate(now=now)
    existing = only_signal("sqli-attempts")

    def missed(groups: list[Any], now: datetime) -> None:
        for group in groups:
            group.open_signal = group.archived_signal = None

    monkeypatch.setattr(evaluation, "_signals_prefetch", missed)
    security_events(web, 5, at=now + timedelta(seconds=1))
    result = signals_evaluate(now=now)
    assert result.signals_created == 0
    assert result.signals_updated == 1
    existing.refresh_from_db()
    assert existing.event_count == 15
    assert [k for k, _, _ in kinds(existing)] == ["created"]


def test_long_group_values_get_a_digest_key(web: Service, now: datetime) -> None:
    route = "/" + "a" * 499
    security_events(web, 1, at=now, route=route, category="vulnerability_trigger")
    signals_evaluate(now=now)
    signal = only_signal("exploit")
    assert signal.group_key.startswith("sha256:")
    assert signal.group["route"] == route
    security_events(
        web, 1, at=now + timedelta(seconds=1), route=route, category="vulnerability_trigger"
    )
    signals_evaluate(now=now)
    assert only_signal("exploit").event_count == 2
