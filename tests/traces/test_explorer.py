"""The suspicious requests explorer: one row per request, filters, pages, CSV export."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import Role
from services.models import Service
from tests.factories import ServiceFactory, UserFactory
from tests.traces.replay import process_pending, send
from traces.models import SecurityEvent

pytestmark = pytest.mark.django_db

HOSTILE = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


@pytest.fixture
def viewer(client: Client) -> Client:
    client.force_login(UserFactory.create(role=Role.VIEWER))
    return client


def event(service: Service, span_id: str, **values: Any) -> SecurityEvent:
    fields: dict[str, Any] = {
        "trace_id": "a" * 32,
        "span_id": span_id,
        "service": service,
        "env": service.env,
        "source": SecurityEvent.Source.TRACER,
        "rule_id": "crs-942-100",
        "rule_name": "SQL injection",
        "rule_type": "sql_injection",
        "rule_category": "attack_attempt",
        "client_ip": "203.0.113.7",
        "method": "GET",
        "route": "/search",
        "url": "https://shop.example/search?q=1",
        "status_code": 200,
        "detected_at": timezone.now(),
    }
    return SecurityEvent.objects.create(**(fields | values))


def test_a_request_with_several_rules_is_one_row(viewer: Client) -> None:
    send(viewer, "v04_03_sqli_xss_path_traversal")
    process_pending()
    SecurityEvent.objects.update(detected_at=timezone.now())
    page = viewer.get("/suspicious-requests/").context["page"]
    keys = set(SecurityEvent.objects.values_list("trace_id", "span_id"))
    assert page.total == len(keys)
    assert {(r.trace_id, r.span_id) for r in page.requests} == keys
    assert all(r.service.name == "web-store" for r in page.requests)
    assert {t for r in page.requests for t in r.rule_types} >= {"sql_injection", "xss", "lfi"}


def test_filters_narrow_the_list(viewer: Client) -> None:
    web = ServiceFactory.create(name="web", env="prod")
    api = ServiceFactory.create(name="api", env="staging")
    event(web, "1", status_code=500, user="alice")
    event(web, "2", rule_type="xss", rule_id="crs-941-100", rule_name="XSS", client_ip="10.0.0.5")
    event(api, "3", url="https://api.example/login?next=/admin", user_agent="sqlmap/1.7")
    event(web, "4", detected_at=timezone.now() - timedelta(days=2))

    def spans(query: str) -> list[str]:
        response = viewer.get(f"/suspicious-requests/?{query}")
        assert response.status_code == 200
        return sorted(r.span_id for r in response.context["page"].requests)

    assert spans("") == ["1", "2", "3"]
    assert spans("window=7d") == ["1", "2", "3", "4"]
    assert spans(f"service={web.pk}") == ["1", "2"]
    assert spans("env=staging") == ["3"]
    assert spans("rule_type=xss") == ["2"]
    assert spans("rule_id=crs-941-100") == ["2"]
    assert spans("client_ip=10.0.0.5") == ["2"]
    assert spans("user=alice") == ["1"]
    assert spans("status=5xx") == ["1"]
    assert spans("status=200") == ["2", "3"]
    assert spans("q=sqlmap") == ["3"]
    assert spans("q=ADMIN") == ["3"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("client_ip=not-an-ip", "client IP: not an IP address"),
        ("service=web", "service: not a service id"),
        ("status=6xx", "status: a code such as 404"),
        ("window=1y", "window: one of 1h, 24h, 7d, 30d"),
    ],
)
def test_a_bad_filter_is_a_400_that_says_why(viewer: Client, query: str, message: str) -> None:
    response = viewer.get(f"/suspicious-requests/?{query}")
    assert response.status_code == 400
    assert message in response.content.decode()


def test_pages_hold_fifty_requests_newest_first(viewer: Client) -> None:
    web = ServiceFactory.create(name="web", env="prod")
    now = timezone.now()
    for i in range(60):
        event(web, f"{i:016x}", detected_at=now - timedelta(seconds=i))
    first = viewer.get("/suspicious-requests/").context["page"]
    second = viewer.get("/suspicious-requests/?page=2").context["page"]
    assert (first.total, first.pages, len(first.requests), len(second.requests)) == (60, 2, 50, 10)
    assert first.requests[0].span_id == f"{0:016x}"
    assert second.requests[-1].span_id == f"{59:016x}"


def test_htmx_gets_the_table_alone(viewer: Client) -> None:
    event(ServiceFactory.create(name="web", env="prod"), "1")
    response = viewer.get("/suspicious-requests/?window=7d", HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert body.lstrip().startswith('<div id="request-table">')
    assert "<html" not in body


def test_private_client_ips_bring_the_proxy_note(viewer: Client) -> None:
    web = ServiceFactory.create(name="web", env="prod")
    event(web, "1", client_ip="10.1.2.3")
    event(web, "2", client_ip="192.168.0.9")
    assert "ASM_CLIENT_IP_HEADER" in viewer.get("/suspicious-requests/").content.decode()
    SecurityEvent.objects.update(client_ip="93.184.216.34")  # is_global: not a TEST-NET
    assert "ASM_CLIENT_IP_HEADER" not in viewer.get("/suspicious-requests/").content.decode()


def test_attacker_controlled_fields_are_shown_as_text(viewer: Client) -> None:
    web = ServiceFactory.create(name="web", env="prod")
    event(
        web,
        "1",
        route=HOSTILE,
        url=f"https://x/{HOSTILE}",
        user=HOSTILE,
        rule_name=HOSTILE,
        client_ip_source=HOSTILE,
    )
    body = viewer.get("/suspicious-requests/").content.decode()
    assert "<script>alert(1)</script>" not in body
    assert "<img src=x" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


def test_the_csv_export_is_safe_to_open_in_a_spreadsheet(viewer: Client) -> None:
    web = ServiceFactory.create(name="web", env="prod")
    formula = '=HYPERLINK("http://evil.example","click")'
    event(web, "1", user=formula, user_agent="+cmd|' /C calc'!A0")
    event(web, "2", route="-2+3", rule_type="xss")
    response = viewer.get("/suspicious-requests/export.csv?window=24h")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert "attachment;" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.getvalue().decode())))
    assert len(rows) == 2
    by_span = {row["span_id"]: row for row in rows}
    assert by_span["1"]["user"] == "'" + formula
    assert by_span["1"]["user_agent"] == "'+cmd|' /C calc'!A0"
    assert by_span["2"]["route"] == "'-2+3"
    assert by_span["2"]["rule_types"] == "xss"
    assert viewer.get("/suspicious-requests/export.csv?status=abc").status_code == 400


def test_signed_out_visitors_are_sent_to_sign_in(client: Client) -> None:
    for url in ("/suspicious-requests/", "/suspicious-requests/export.csv"):
        response = client.get(url)
        assert response.status_code == 302
        assert "/accounts/login/" in response["Location"]


def test_queries_do_not_grow_with_the_rows_shown(
    viewer: Client, django_assert_num_queries: Any
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    web = ServiceFactory.create(name="web", env="prod")
    counts = []
    for n in (3, 40):
        SecurityEvent.objects.all().delete()
        for i in range(n):
            event(web, f"{i:016x}")
        with CaptureQueriesContext(connection) as queries:
            assert viewer.get("/suspicious-requests/").status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1]
