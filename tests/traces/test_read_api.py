from __future__ import annotations

import pytest
from django.db.models import QuerySet
from django.test import Client

from tests.traces.replay import process_pending, send
from traces.models import SecurityEvent, Span


def tracer_events() -> QuerySet[SecurityEvent]:
    """The tracer's own findings (the console's detection adds its own, tested elsewhere)."""
    return SecurityEvent.objects.filter(source=SecurityEvent.Source.TRACER)


pytestmark = pytest.mark.django_db


@pytest.fixture
def attacks(client: Client) -> None:
    for name in (
        "v04_scanner_trace",
        "v04_05_xff_public_private_nikto",
        "v04_03_sqli_xss_path_traversal",
    ):
        send(client, name)
    process_pending()


def test_services_count_suspicious_requests_in_a_window(
    client: Client, make_api_key, attacks
) -> None:
    key = make_api_key("read")
    # The captures are from the past: a window reaching back to them counts them.
    services = client.get("/api/v1/services?window=30d", HTTP_DD_API_KEY=key).json()
    assert services["count"] == 1
    web_store = services["results"][0]
    assert len(set(tracer_events().values_list("trace_id", "span_id"))) == 9
    # Requests flagged by the tracer, by the console's own rules, or by both count once.
    expected = len(set(SecurityEvent.objects.values_list("trace_id", "span_id")))
    assert (
        web_store["name"],
        web_store["env"],
        web_store["asm_enabled"],
        web_store["language"],
    ) == (
        "web-store",
        "prod",
        True,
        "python",
    )
    assert web_store["suspicious_requests"] == (expected if _within_days(30) else 0)
    bad = client.get("/api/v1/services?window=2w", HTTP_DD_API_KEY=key)
    assert bad.status_code == 400
    assert "window" in bad.json()["error"]["details"]


def _within_days(days: int) -> bool:
    from datetime import timedelta

    from django.utils import timezone

    newest = max(tracer_events().values_list("detected_at", flat=True))
    return timezone.now() - newest < timedelta(days=days)


def test_security_events_filter_and_paginate(client: Client, make_api_key, attacks) -> None:
    key = make_api_key("read")

    def get(query: str) -> dict:
        # The tracer's findings; the console's own are filtered in the same way.
        response = client.get(f"/api/v1/security-events?source=tracer&{query}", HTTP_DD_API_KEY=key)
        assert response.status_code == 200, response.content
        return response.json()

    everything = get("")
    assert everything["count"] == tracer_events().count() == 9
    first = everything["results"][0]
    assert set(first) >= {
        "rule_id",
        "rule_name",
        "rule_type",
        "rule_category",
        "client_ip",
        "user",
        "service",
        "env",
        "trace_id",
        "span_id",
        "method",
        "route",
        "status_code",
        "blocked",
        "parameters",
        "source",
    }
    scanners = get("rule_type=security_scanner")
    assert [e["rule_id"] for e in scanners["results"]] == ["ua0-600-55x", "ua0-600-55x"]
    tools = get("rule_type=attack_tool")
    assert {e["rule_id"] for e in tools["results"]} == {"ua0-600-56x", "ua0-600-31x"}
    by_ip = get("client_ip=203.0.113.7")
    assert [e["rule_id"] for e in by_ip["results"]] == ["crs-942-100"]
    assert by_ip["results"][0]["parameters"][0]["key_path"] == ["id"]
    assert get("service=web-store&env=prod&rule_id=crs-942-100")["count"] == 2
    assert get("service=nope")["count"] == 0
    page = get("limit=2&offset=2")
    assert len(page["results"]) == 2
    assert page["count"] == 9
    assert get("since=2100-01-01T00:00:00Z")["count"] == 0
    assert get("until=2100-01-01T00:00:00Z")["count"] == 9

    for bad in ("client_ip=not-an-ip", "since=yesterday", "since=2026-01-01T00:00:00"):
        response = client.get(f"/api/v1/security-events?{bad}", HTTP_DD_API_KEY=key)
        assert response.status_code == 400, bad


def test_trace_detail_by_hex_or_decimal_id(client: Client, make_api_key, attacks) -> None:
    key = make_api_key("read")
    event = tracer_events().get(rule_id="ua0-600-56x")
    by_hex = client.get(f"/api/v1/traces/{event.trace_id}", HTTP_DD_API_KEY=key)
    assert by_hex.status_code == 200
    detail = by_hex.json()
    assert detail["trace_id"] == event.trace_id
    assert len(detail["spans"]) == Span.objects.filter(trace_id=event.trace_id).count()
    tracer_rules = [e["rule_id"] for e in detail["security_events"] if e["source"] == "tracer"]
    assert tracer_rules == ["ua0-600-56x"]

    low64 = int(event.trace_id[16:], 16)
    assert (
        client.get(f"/api/v1/traces/{low64}", HTTP_DD_API_KEY=key).json()["trace_id"]
        == event.trace_id
    )
    assert client.get("/api/v1/traces/deadbeef", HTTP_DD_API_KEY=key).status_code == 404
    assert client.get("/api/v1/traces/<script>", HTTP_DD_API_KEY=key).status_code == 404


def test_read_endpoints_need_the_read_scope(client: Client, make_api_key, attacks) -> None:
    intake_only = make_api_key("intake")
    for path in (
        "/api/v1/security-events",
        "/api/v1/services",
        f"/api/v1/traces/{Span.objects.values_list('trace_id', flat=True)[0]}",
    ):
        assert client.get(path, HTTP_DD_API_KEY=intake_only).status_code == 403
        assert client.get(path).status_code == 401
