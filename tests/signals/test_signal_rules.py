"""The signal-rule format, the shipped rules, and the signal rules API."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import User
from asm_console.settings import CELERY_BEAT_SCHEDULE
from signals.evaluation import signals_evaluate
from signals.models import Signal, SignalRule
from signals.signal_rules import (
    SignalRuleError,
    active_signal_rules,
    builtin_document,
    builtin_signal_rules,
    parse_signal_rule,
)
from tests.factories import ServiceFactory
from tests.signals.test_evaluation import security_events

CUSTOM: dict[str, Any] = {
    "id": "admin-probing",
    "name": "Admin pages probed",
    "title": "Admin pages probed on {service} from {client_ip}",
    "source": "security_event",
    "queries": {"admin": {"rule_category": ["attack_attempt"], "route": True}},
    "group_by": ["service", "env", "client_ip"],
    "window_seconds": 900,
    "cases": [
        {
            "severity": "medium",
            "when": [{"query": "admin", "aggregate": "requests", "op": ">=", "value": 20}],
        },
        {
            "severity": "low",
            "when": [{"query": "admin", "aggregate": "count", "op": ">=", "value": 3}],
        },
    ],
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    """CUSTOM with the value at a dotted path replaced (`...=DELETE` removes it)."""
    rule = copy.deepcopy(CUSTOM)
    *parents, last = path.split(".")
    node: Any = rule
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return rule


DELETE = object()


# --- the format -------------------------------------------------------------------------------


def test_shipped_rules_parse_and_keep_their_documented_shape() -> None:
    rules = builtin_signal_rules()
    assert len(rules) == len(builtin_document()) == 12
    for rule in rules.values():
        # Normalising a parsed rule and parsing it again gives the same rule.
        assert parse_signal_rule(rule.as_definition()) == rule
        assert rule.description, rule.id
        assert rule.next_steps, rule.id
    scanner = rules["security-scanner"]
    assert scanner.name == "Security scanner detected"
    # One signal a service: the getting-started simulation comes from many addresses.
    assert scanner.group_by == ("service", "env")


def test_a_custom_rule_parses() -> None:
    rule = parse_signal_rule(CUSTOM)
    assert rule.source == "security_event"
    assert rule.window_seconds == 900
    assert rule.severity_for({("admin", "requests"): 20, ("admin", "count"): 40}) == "medium"
    assert rule.severity_for({("admin", "requests"): 2, ("admin", "count"): 3}) == "low"
    assert rule.severity_for({("admin", "requests"): 1, ("admin", "count"): 2}) is None
    assert (
        rule.title_for({"service": "web", "env": "prod", "client_ip": "1.2.3.4"})
        == "Admin pages probed on web from 1.2.3.4"
    )


@pytest.mark.parametrize(
    ("path", "value", "field", "fragment"),
    [
        ("id", "Bad Id", "id", "lowercase"),
        ("name", "", "name", "non-empty"),
        ("source", "spans", "source", "security_event"),
        ("window_seconds", 0, "window_seconds", "between 1"),
        ("window_seconds", "600", "window_seconds", "an integer"),
        ("window_seconds", 10**9, "window_seconds", "between 1"),
        ("group_by", ["service", "kind"], "group_by", "'kind' is not one of"),
        ("group_by", [], "group_by", "non-empty"),
        ("group_by", ["service", "service"], "group_by", "twice"),
        ("queries", {}, "queries", "non-empty"),
        ("queries.admin.rule_type", "xss", "queries.admin.rule_type", "list"),
        ("queries.admin.kind", ["login_failure"], "queries.admin.kind", "unknown filter"),
        ("queries.admin.blocked", "yes", "queries.admin.blocked", "true or false"),
        ("queries.admin.status_code", {"min": 600}, "queries.admin.status_code.min", "between"),
        (
            "queries.admin.status_code",
            {"min": 500, "max": 400},
            "queries.admin.status_code",
            "above",
        ),
        ("queries.admin.status_code", {"gte": 500}, "queries.admin.status_code", "min, max"),
        ("title", "Probe on {route}", "title", "group-by fields"),
        ("title", "Probe on {service.__class__}", "title", "group-by fields"),
        ("title", "Probe {", "title", "not a valid template"),
        ("cases", [], "cases", "non-empty"),
        ("cases.0.severity", "urgent", "cases[0].severity", "one of info"),
        ("cases.0.when", [], "cases[0].when", "non-empty"),
        ("cases.0.when.0.query", "nope", "cases[0].when[0].query", "not one of"),
        ("cases.1.when.0.aggregate", "sum", "cases[1].when[0].aggregate", "distinct:"),
        ("cases.1.when.0.aggregate", "distinct:kind", "cases[1].when[0].aggregate", "distinct:"),
        ("cases.1.when.0.op", "!=", "cases[1].when[0].op", "one of"),
        ("cases.1.when.0.value", -1, "cases[1].when[0].value", "between 0"),
        ("cases.1.when.0.value", True, "cases[1].when[0].value", "an integer"),
        ("threshold", 5, "threshold", "unknown field"),
    ],
)
def test_invalid_rules_name_the_rule_and_the_field(
    path: str, value: Any, field: str, fragment: str
) -> None:
    with pytest.raises(SignalRuleError) as caught:
        parse_signal_rule(with_change(path, value))
    rule_name = value if path == "id" else "admin-probing"
    assert str(caught.value).startswith(f"signal rule {rule_name!r}: {field}: "), caught.value
    assert fragment in str(caught.value)
    assert caught.value.field == field


def test_business_rules_have_their_own_filters_and_fields() -> None:
    rule = parse_signal_rule(
        {
            "id": "signup-burst",
            "name": "Signup burst",
            "title": "Signups from {client_ip}",
            "source": "business_event",
            "queries": {"signups": {"kind": ["signup"]}},
            "group_by": ["service", "client_ip"],
            "window_seconds": 60,
            "cases": [
                {
                    "severity": "low",
                    "when": [{"query": "signups", "aggregate": "distinct:user", "value": 5}],
                }
            ],
        }
    )
    # op defaults to >=.
    assert rule.severity_for({("signups", "distinct:user"): 5}) == "low"
    with pytest.raises(SignalRuleError, match="group_by: 'route' is not one of"):
        parse_signal_rule({**rule.as_definition(), "group_by": ["service", "route"]})
    with pytest.raises(SignalRuleError, match=r"queries.signups.rule_type: unknown filter"):
        parse_signal_rule({**rule.as_definition(), "queries": {"signups": {"rule_type": ["x"]}}})


def test_active_rules_merge_builtins_with_their_state(db: None) -> None:
    tuned = builtin_signal_rules()["sqli-attempts"].as_definition()
    tuned["window_seconds"] = 60
    SignalRule.objects.create(rule_id="xss-attempts", source="builtin", enabled=False)
    SignalRule.objects.create(rule_id="sqli-attempts", source="builtin", definition=tuned)
    SignalRule.objects.create(rule_id="admin-probing", source="custom", definition=CUSTOM)
    SignalRule.objects.create(
        rule_id="off-custom",
        source="custom",
        definition={**CUSTOM, "id": "off-custom"},
        enabled=False,
    )
    # A stored rule that no longer parses is skipped, not fatal.
    SignalRule.objects.create(rule_id="broken", source="custom", definition={"id": "broken"})
    rules = {rule.id: rule for rule in active_signal_rules()}
    assert "xss-attempts" not in rules
    assert "off-custom" not in rules
    assert "broken" not in rules
    assert rules["sqli-attempts"].window_seconds == 60
    assert rules["admin-probing"].name == "Admin pages probed"


def test_beat_runs_the_evaluation_every_15_seconds() -> None:
    entry = CELERY_BEAT_SCHEDULE["evaluate-signals"]
    assert entry["task"] == "signals.tasks.evaluate_signals"
    assert entry["schedule"] == timedelta(seconds=15)


# --- the API ----------------------------------------------------------------------------------


@pytest.fixture
def member(member_user: User, client_for: Callable[[User], Client]) -> Client:
    return client_for(member_user)


def test_list_shows_every_rule_with_its_open_signals(
    client_for: Callable[[User], Client], viewer_user: User
) -> None:
    service = ServiceFactory.create()
    now = timezone.now()
    for status, reason, archived_at in (("open", "", None), ("archived", "resolved", now)):
        Signal.objects.create(
            rule_id="sqli-attempts",
            rule_name="SQL injection attempts",
            title="t",
            severity="low",
            status=status,
            archive_reason=reason,
            archived_at=archived_at,
            group_key=f"k-{status}",
            service=service,
            first_seen=now,
            last_seen=now,
        )
    response = client_for(viewer_user).get("/api/v1/signal-rules")
    assert response.status_code == 200
    rows = {row["id"]: row for row in response.json()}
    assert set(rows) == set(builtin_signal_rules())
    assert rows["sqli-attempts"]["open_signals"] == 1
    assert rows["sqli-attempts"]["source"] == "builtin"
    assert rows["sqli-attempts"]["enabled"] is True
    assert rows["sqli-attempts"]["definition"]["window_seconds"] == 600
    assert rows["xss-attempts"]["open_signals"] == 0


def test_create_a_custom_rule_that_the_workers_evaluate(member: Client, member_user: User) -> None:
    response = member.post("/api/v1/signal-rules", CUSTOM, content_type="application/json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["id"] == "admin-probing"
    assert body["source"] == "custom"
    assert body["enabled"]
    row = SignalRule.objects.get(rule_id="admin-probing")
    assert row.source == "custom"
    assert row.updated_by == member_user
    assert row.definition is not None
    assert row.definition["window_seconds"] == 900

    service = ServiceFactory.create(name="admin-app")
    now = timezone.now()
    security_events(service, 3, at=now, route="/admin")
    signals_evaluate(now=now)
    signal = Signal.objects.get(rule_id="admin-probing")
    assert signal.severity == "low"
    assert signal.title == "Admin pages probed on admin-app from 203.0.113.5"


def test_create_refuses_an_invalid_rule_naming_the_field(member: Client) -> None:
    response = member.post(
        "/api/v1/signal-rules",
        with_change("window_seconds", -5),
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "invalid",
            "message": "signal rule 'admin-probing': window_seconds: between 1 and 604800",
            "details": {"field": "window_seconds"},
        }
    }
    assert not SignalRule.objects.exists()


@pytest.mark.parametrize("body", [[], "text", {"id": 5}])
def test_create_refuses_what_is_no_rule_at_all(member: Client, body: Any) -> None:
    response = member.post("/api/v1/signal-rules", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"


def test_create_refuses_a_taken_id(member: Client) -> None:
    response = member.post(
        "/api/v1/signal-rules", {**CUSTOM, "id": "brute-force"}, content_type="application/json"
    )
    assert response.status_code == 409
    assert (
        member.post("/api/v1/signal-rules", CUSTOM, content_type="application/json").status_code
        == 201
    )
    again = member.post("/api/v1/signal-rules", CUSTOM, content_type="application/json")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "conflict"


def test_viewers_and_read_keys_cannot_write(
    client_for: Callable[[User], Client], viewer_user: User, make_api_key: Any
) -> None:
    viewer = client_for(viewer_user)
    assert (
        viewer.post("/api/v1/signal-rules", CUSTOM, content_type="application/json").status_code
        == 403
    )
    assert (
        viewer.patch(
            "/api/v1/signal-rules/sqli-attempts",
            {"enabled": False},
            content_type="application/json",
        ).status_code
        == 403
    )
    key = make_api_key("read")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.get("/api/v1/signal-rules").status_code == 200
    response = client.post("/api/v1/signal-rules", CUSTOM, content_type="application/json")
    assert response.status_code == 403
    assert Client().get("/api/v1/signal-rules").status_code in (401, 403)
    assert not SignalRule.objects.exists()


def test_write_key_can_add_a_rule(make_api_key: Any) -> None:
    key = make_api_key("read", "write")
    response = Client().post(
        "/api/v1/signal-rules",
        CUSTOM,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert response.status_code == 201
    assert SignalRule.objects.get(rule_id="admin-probing").updated_by is None


def test_switch_off_a_builtin_rule(member: Client) -> None:
    response = member.patch(
        "/api/v1/signal-rules/sqli-attempts", {"enabled": False}, content_type="application/json"
    )
    assert response.status_code == 200
    assert response.json()["enabled"] is False
    row = SignalRule.objects.get(rule_id="sqli-attempts")
    assert row.source == "builtin"
    assert row.definition is None
    assert not row.enabled
    assert "sqli-attempts" not in {rule.id for rule in active_signal_rules()}

    member.patch(
        "/api/v1/signal-rules/sqli-attempts", {"enabled": True}, content_type="application/json"
    )
    assert "sqli-attempts" in {rule.id for rule in active_signal_rules()}


def test_tune_a_builtin_rule_and_give_it_back_its_definition(member: Client) -> None:
    tuned = builtin_signal_rules()["sqli-attempts"].as_definition()
    tuned["cases"][1]["when"][0]["value"] = 3
    response = member.patch(
        "/api/v1/signal-rules/sqli-attempts", {"definition": tuned}, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["tuned"] is True
    assert response.json()["definition"]["cases"][1]["when"][0]["value"] == 3

    service = ServiceFactory.create()
    now = timezone.now()
    security_events(service, 3, at=now)
    signals_evaluate(now=now)
    assert Signal.objects.get(rule_id="sqli-attempts").severity == "low"

    response = member.patch(
        "/api/v1/signal-rules/sqli-attempts", {"definition": None}, content_type="application/json"
    )
    assert response.json()["tuned"] is False
    assert response.json()["definition"]["cases"][1]["when"][0]["value"] == 10


def test_tuning_is_validated_and_keeps_the_id(member: Client) -> None:
    tuned = builtin_signal_rules()["sqli-attempts"].as_definition()
    response = member.patch(
        "/api/v1/signal-rules/sqli-attempts",
        {"definition": {**tuned, "window_seconds": "soon"}},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"field": "window_seconds"}
    response = member.patch(
        "/api/v1/signal-rules/sqli-attempts",
        {"definition": {**tuned, "id": "other"}},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "keeps its id" in response.json()["error"]["message"]
    assert not SignalRule.objects.exists()


def test_patch_needs_a_change_and_a_known_rule(member: Client) -> None:
    assert (
        member.patch(
            "/api/v1/signal-rules/sqli-attempts", {}, content_type="application/json"
        ).status_code
        == 400
    )
    response = member.patch(
        "/api/v1/signal-rules/nope", {"enabled": False}, content_type="application/json"
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_edit_and_delete_a_custom_rule(member: Client) -> None:
    member.post("/api/v1/signal-rules", CUSTOM, content_type="application/json")
    changed = with_change("window_seconds", 60)
    response = member.patch(
        "/api/v1/signal-rules/admin-probing",
        {"definition": changed},
        content_type="application/json",
    )
    assert response.status_code == 200
    definition = SignalRule.objects.get(rule_id="admin-probing").definition
    assert definition is not None
    assert definition["window_seconds"] == 60
    response = member.patch(
        "/api/v1/signal-rules/admin-probing", {"definition": None}, content_type="application/json"
    )
    assert response.status_code == 400

    assert member.get("/api/v1/signal-rules/admin-probing").status_code == 200
    assert member.delete("/api/v1/signal-rules/admin-probing").status_code == 204
    assert not SignalRule.objects.exists()
    assert member.delete("/api/v1/signal-rules/admin-probing").status_code == 404
    assert member.get("/api/v1/signal-rules/admin-probing").status_code == 404


def test_builtin_rules_cannot_be_deleted(member: Client) -> None:
    response = member.delete("/api/v1/signal-rules/brute-force")
    assert response.status_code == 409
    assert "switch them off" in response.json()["error"]["message"]


def test_schema_documents_the_endpoints(
    client_for: Callable[[User], Client], viewer_user: User
) -> None:
    response = client_for(viewer_user).get("/api/schema/")
    assert response.status_code == 200
    text = response.content.decode()
    assert "/api/v1/signal-rules/{rule_id}" in text
    assert "admin-probing" in text  # the example
