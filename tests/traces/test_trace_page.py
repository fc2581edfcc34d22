"""The trace page: spans as a waterfall, the attack flow across services, and each finding."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import Role
from tests.factories import ServiceFactory, UserFactory
from tests.traces.replay import process_pending, send
from traces.models import SecurityEvent, Span
from traces.selectors import highlighted, trace_view

pytestmark = pytest.mark.django_db

TRACE = "0" * 16 + "ab" * 8
HOSTILE = '"><script>alert(1)</script><svg onload=alert(2)>'


@pytest.fixture
def viewer(client: Client) -> Client:
    client.force_login(UserFactory.create(role=Role.VIEWER))
    return client


def span(
    span_id: str, parent_id: str, service: str, start: int, duration: int, **extra: Any
) -> Span:
    return Span.objects.create(
        trace_id=TRACE,
        span_id=span_id,
        parent_id=parent_id,
        service_name=service,
        name="op",
        resource=extra.pop("resource", "GET /"),
        start=datetime(2026, 12, 1, tzinfo=UTC),
        start_ns=start,
        duration_ns=duration,
        **extra,
    )


def test_the_attack_flow_shows_every_service_the_request_reached() -> None:
    gateway = ServiceFactory.create(name="gateway", env="prod")
    span("1", "", "gateway", 0, 1000)
    span("2", "1", "gateway", 10, 900)
    span("3", "2", "orders", 20, 800)
    span("4", "3", "orders-db", 30, 100)
    span("5", "2", "payments", 200, 300)
    SecurityEvent.objects.create(
        trace_id=TRACE,
        span_id="1",
        service=gateway,
        env="prod",
        source="tracer",
        rule_id="crs-942-100",
        rule_type="sql_injection",
        detected_at=timezone.now(),
    )
    view = trace_view(trace_id=TRACE)
    assert view is not None
    nodes = {node.service: node for node in view.nodes}
    assert set(nodes) == {"gateway", "orders", "orders-db", "payments"}
    assert (nodes["gateway"].entry, nodes["gateway"].attacked) == (True, True)
    assert (nodes["orders"].entry, nodes["orders"].attacked) == (False, False)
    assert nodes["gateway"].x < nodes["orders"].x < nodes["orders-db"].x
    assert nodes["orders"].x == nodes["payments"].x
    assert {(e.source, e.target) for e in view.edges} == {
        ("gateway", "orders"),
        ("orders", "orders-db"),
        ("gateway", "payments"),
    }
    # The waterfall: depth first under parents, bars in thousandths of the trace.
    assert [(row.span.span_id, row.depth) for row in view.waterfall] == [
        ("1", 0),
        ("2", 1),
        ("3", 2),
        ("4", 3),
        ("5", 2),
    ]
    assert (view.waterfall[0].x, view.waterfall[0].width) == (0, 1000)
    assert (view.waterfall[4].x, view.waterfall[4].width) == (200, 300)


def test_spans_that_form_a_cycle_are_shown_once() -> None:
    span("1", "2", "a", 0, 10)
    span("2", "1", "b", 0, 10)
    view = trace_view(trace_id=TRACE)
    assert view is not None
    assert sorted(row.span.span_id for row in view.waterfall) == ["1", "2"]


def test_a_finding_shows_rule_input_key_path_and_the_highlighted_value(viewer: Client) -> None:
    send(viewer, "v04_03_sqli_xss_path_traversal")
    process_pending()
    event = SecurityEvent.objects.filter(rule_type="xss", source="tracer").first()
    assert event is not None
    page = viewer.get(f"/suspicious-requests/traces/{event.trace_id}/")
    assert page.status_code == 200
    body = page.content.decode()
    parameter = event.parameters[0]
    assert event.rule_id in body
    assert str(parameter["address"]) in body
    assert "<mark>" in body
    assert "Attack flow" in body
    assert "web-store" in body
    # The 64-bit decimal id that logs show finds the same trace.
    low = int(event.trace_id[16:], 16)
    assert viewer.get(f"/suspicious-requests/traces/{low}/").status_code == 200


def test_highlighting_marks_fragments_and_leaves_the_rest() -> None:
    shown = highlighted("a <script>x</script> b", {"highlight": ["<script>", "zzz"]})
    assert shown.pieces == [("a ", False), ("<script>", True), ("x</script> b", False)]
    assert highlighted("s&1c fingerprint", {"highlight": ["nothing"]}).pieces == [
        ("s&1c fingerprint", False)
    ]
    assert highlighted("x" * 5000, {}).truncated


def test_attacker_controlled_values_are_text(viewer: Client) -> None:
    service = ServiceFactory.create(name=HOSTILE, env="prod")
    span("1", "", HOSTILE, 0, 1000, resource=HOSTILE)
    SecurityEvent.objects.create(
        trace_id=TRACE,
        span_id="1",
        service=service,
        env="prod",
        source="console",
        rule_id="asm-941-100",
        rule_name=HOSTILE,
        rule_type="xss",
        user=HOSTILE,
        route=HOSTILE,
        client_ip_source=HOSTILE,
        rule_matches=[
            {
                "operator": HOSTILE,
                "operator_value": HOSTILE,
                "parameters": [
                    {
                        "address": HOSTILE,
                        "key_path": [HOSTILE],
                        "value": HOSTILE,
                        "highlight": ["<script>"],
                    }
                ],
            }
        ],
        detected_at=timezone.now(),
    )
    body = viewer.get(f"/suspicious-requests/traces/{TRACE}/").content.decode()
    assert "<script>alert(1)</script>" not in body
    assert "<svg onload" not in body
    assert "<mark>&lt;script&gt;</mark>" in body


def test_an_unknown_or_malformed_trace_id_is_a_404(viewer: Client) -> None:
    assert viewer.get(f"/suspicious-requests/traces/{'f' * 32}/").status_code == 404
    assert viewer.get("/suspicious-requests/traces/not-hex/").status_code == 404


def test_a_rasp_finding_shows_the_input_and_what_it_reached(viewer: Client) -> None:
    send(viewer, "v04_07_rasp_exploits_sqli_lfi_shell")
    process_pending()
    event = SecurityEvent.objects.filter(rule_id__startswith="rasp-932").first()
    assert event is not None
    view = trace_view(trace_id=event.trace_id)
    assert view is not None
    (finding,) = [f for f in view.findings if f.event.pk == event.pk]
    (parameter,) = finding.parameters
    assert (parameter["input"], parameter["key_path"]) == ("server.request.query", "host")
    assert parameter["reached"] == "server.sys.shell.cmd"
    assert ("127.0.0.1; id", True) in parameter["shown"].pieces
    assert ("127.0.0.1; id", True) in parameter["reached_shown"].pieces
