"""Managing detection rules, and the console's events from requests no tracer flagged."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from accounts.models import Role
from signals.detection.loader import builtin_rules
from signals.models import DetectionRule, DetectionStats
from tests.factories import UserFactory
from tests.traces.replay import process_pending
from traces.models import SecurityEvent

pytestmark = pytest.mark.django_db

CUSTOM = {
    "id": "custom-001",
    "name": "Internal admin path probed",
    "tags": {"type": "forced_browsing", "category": "attack_attempt"},
    "conditions": [
        {
            "operator": "match_regex",
            "parameters": {
                "inputs": [{"address": "server.request.uri.raw"}],
                "regex": "^/internal-admin",
            },
        }
    ],
    "transformers": ["lowercase"],
}


def request_span(uri: str, **meta: str) -> dict[str, Any]:
    return {
        "trace_id": "123456789",
        "span_id": str(abs(hash(uri)) % 2**63),
        "service": "checkout",
        "name": "http.request",
        "resource": "GET /",
        "type": "web",
        "start": 1_795_904_574_977_863_162,
        "duration": 1000,
        "meta": {
            "span.kind": "server",
            "env": "prod",
            "http.method": "GET",
            "http.url": f"https://shop.example.com{uri}",
            "http.client_ip": "203.0.113.9",
            **meta,
        },
    }


def send_json(client: Client, key: str, *spans: dict[str, Any]) -> None:
    response = client.post(
        "/api/v1/traces", {"traces": [list(spans)]}, "application/json", HTTP_DD_API_KEY=key
    )
    assert response.status_code == 202, response.content


def test_json_request_without_tracer_findings_gets_console_events(
    client: Client, make_api_key
) -> None:
    key = make_api_key("intake")
    send_json(
        client,
        key,
        request_span("/search?q=%27%20OR%201%3D1--"),
        request_span(
            "/products?id=42", **{"http.request.headers.user-agent": "dd-test-scanner-log"}
        ),
        request_span("/products?id=43"),
    )
    process_pending()
    events = SecurityEvent.objects.filter(source=SecurityEvent.Source.CONSOLE)
    by_type = {e.rule_type for e in events}
    assert {"sql_injection", "security_scanner"} <= by_type
    sqli = events.get(rule_id="asm-942-100")
    assert sqli.client_ip == "203.0.113.9"
    assert sqli.rule_module == "console"
    assert sqli.parameters[0]["address"] == "server.request.query"
    assert sqli.parameters[0]["key_path"] == ["q", 0]
    assert sqli.parameters[0]["value"] == "' OR 1=1--"
    assert not events.filter(url__endswith="id=43").exists()
    stats = DetectionStats.objects.get()
    assert stats.requests == 3
    assert stats.matches == events.count()
    assert stats.budget_overruns == 0


def test_the_same_rule_on_the_same_span_is_one_event(client: Client, make_api_key) -> None:
    key = make_api_key("intake")
    span = request_span("/search?q=%27%20OR%201%3D1--&r=%27%20OR%202%3E1--")
    send_json(client, key, span)
    send_json(client, key, span)
    process_pending()
    assert SecurityEvent.objects.filter(source="console", rule_id="asm-942-100").count() == 1


def test_members_add_disable_and_import_rules(client: Client, make_api_key) -> None:
    client.force_login(UserFactory.create(role=Role.MEMBER))
    created = client.post("/api/v1/detection-rules", CUSTOM, "application/json")
    assert created.status_code == 201
    assert created.json()["source"] == "custom"

    key = make_api_key("intake")
    send_json(client, key, request_span("/internal-admin/users"))
    process_pending()
    assert SecurityEvent.objects.filter(rule_id="custom-001", source="console").count() == 1

    listed = {r["rule_id"]: r for r in client.get("/api/v1/detection-rules").json()}
    assert listed["custom-001"]["hits"] == 1
    builtin = next(r for r in listed.values() if r["source"] == "builtin")
    assert (
        client.patch(
            f"/api/v1/detection-rules/{builtin['rule_id']}", {"enabled": False}, "application/json"
        ).status_code
        == 200
    )
    assert DetectionRule.objects.get(rule_id=builtin["rule_id"]).enabled is False
    assert client.get("/api/v1/detection-rules").json()[0] is not None

    client.patch("/api/v1/detection-rules/custom-001", {"enabled": False}, "application/json")
    send_json(client, key, request_span("/internal-admin/other"))
    process_pending()
    assert SecurityEvent.objects.filter(rule_id="custom-001").count() == 1

    second = dict(CUSTOM, id="custom-002")
    loaded = client.post(
        "/api/v1/detection-rules/import", {"version": "2.2", "rules": [second]}, "application/json"
    )
    assert loaded.json() == {"loaded": 1}


def test_a_bad_rule_file_loads_nothing_and_names_the_rule(client: Client) -> None:
    client.force_login(UserFactory.create(role=Role.MEMBER))
    broken = dict(
        CUSTOM,
        id="broken-7",
        conditions=[
            {
                "operator": "match_regex",
                "parameters": {"inputs": [{"address": "server.request.query"}], "regex": "(a)\\1"},
            }
        ],
    )
    response = client.post(
        "/api/v1/detection-rules/import",
        {"rules": [dict(CUSTOM, id="fine-1"), broken]},
        "application/json",
    )
    assert response.status_code == 400
    assert "rule 'broken-7'" in response.json()["error"]["message"]
    assert not DetectionRule.objects.exists()
    builtin_id = builtin_rules()[0].id
    clash = client.post("/api/v1/detection-rules", dict(CUSTOM, id=builtin_id), "application/json")
    assert clash.status_code == 400
    assert "built-in" in clash.json()["error"]["message"]


@pytest.mark.parametrize(("role", "status"), [(Role.VIEWER, 403), (Role.MEMBER, 201)])
def test_viewers_read_rules_but_do_not_change_them(client: Client, role: Role, status: int) -> None:
    client.force_login(UserFactory.create(role=role))
    assert client.get("/api/v1/detection-rules").status_code == 200
    assert client.get("/signals/rules/").status_code == 200
    assert client.post("/api/v1/detection-rules", CUSTOM, "application/json").status_code == status


def test_rules_page_adds_a_rule_and_shows_errors(client: Client) -> None:
    client.force_login(UserFactory.create(role=Role.MEMBER))
    page = client.get("/signals/rules/")
    assert b"Detection rules" in page.content
    saved = client.post("/signals/rules/", {"rule-definition": json.dumps(CUSTOM)})
    assert saved.status_code == 302
    assert DetectionRule.objects.filter(rule_id="custom-001").exists()
    bad = client.post(
        "/signals/rules/", {"rule-definition": json.dumps(dict(CUSTOM, id="x", tags={}))}
    )
    assert bad.status_code == 400
    assert b"rule &#x27;x&#x27;: tags.type is required" in bad.content
    upload = SimpleUploadedFile(
        "rules.json", json.dumps({"rules": [dict(CUSTOM, id="file-1")]}).encode()
    )
    loaded = client.post("/signals/rules/", {"file-rule_file": upload})
    assert loaded.status_code == 302
    assert DetectionRule.objects.filter(rule_id="file-1").exists()
    toggled = client.post("/signals/rules/file-1/toggle/", {"enabled": "false"})
    assert toggled.status_code == 302
    assert DetectionRule.objects.get(rule_id="file-1").enabled is False
