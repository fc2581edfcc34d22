"""The catalog's security view: figures per service over a window, sorting, Enable ASM."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Role
from services.models import Service
from signals.models import Signal
from tests.factories import ServiceFactory, UserFactory
from traces.models import SecurityEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def viewer(client: Client) -> Client:
    client.force_login(UserFactory.create(role=Role.VIEWER))
    return client


def attack(service: Service, span_id: str, **values: Any) -> SecurityEvent:
    fields: dict[str, Any] = {
        "trace_id": "c" * 32,
        "span_id": span_id,
        "service": service,
        "env": service.env,
        "source": "tracer",
        "rule_id": "crs-942-100",
        "rule_type": "sql_injection",
        "client_ip": "203.0.113.7",
        "detected_at": timezone.now() - timedelta(minutes=10),
    }
    return SecurityEvent.objects.create(**(fields | values))


def signal(service: Service, severity: str, status: str = "open", **values: Any) -> Signal:
    now = timezone.now()
    archived = {"archive_reason": "resolved", "archived_at": now} if status == "archived" else {}
    return Signal.objects.create(
        rule_id="asm-signal",
        rule_name="rule",
        title="t",
        severity=severity,
        status=status,
        group_key=f"{service.pk}-{severity}-{status}-{Signal.objects.count()}",
        service=service,
        first_seen=now,
        last_seen=now,
        **archived,
        **values,
    )


def rows(client: Client, query: str = "") -> list[tuple[Any, Any]]:  # annotated services
    response = client.get(f"/services/?{query}")
    assert response.status_code == 200
    return list(response.context["rows"])


def test_figures_per_service(viewer: Client) -> None:
    web = ServiceFactory.create(name="web", env="prod", asm_enabled=True)
    attack(web, "1")
    attack(web, "1", rule_id="crs-941-100", rule_type="xss")  # the same request
    attack(web, "2", client_ip="198.51.100.1", rule_type="xss", rule_id="crs-941-100")
    attack(web, "3", detected_at=timezone.now() - timedelta(days=3))  # outside 24h
    signal(web, "high")
    signal(web, "low")
    signal(web, "low")
    signal(web, "critical", status="archived")
    service, figures = rows(viewer)[0]
    assert (service.suspicious_requests, service.attack_attempts, service.attackers) == (2, 3, 2)
    assert service.open_signals == 3
    assert figures.categories == [("xss", 2), ("sql_injection", 1)]
    assert figures.signals == [("high", 1), ("low", 2)]
    assert sum(figures.trend) == 2
    assert len(figures.trend) == 12

    service, figures = rows(viewer, "window=7d")[0]
    assert (service.suspicious_requests, service.attack_attempts) == (3, 4)
    assert len(figures.trend) == 7
    assert sum(figures.trend) == 3


def test_every_column_sorts_both_ways(viewer: Client) -> None:
    quiet = ServiceFactory.create(name="aaa-quiet", env="prod", asm_enabled=False)
    busy = ServiceFactory.create(name="zzz-busy", env="dev", asm_enabled=True)
    for i in range(3):
        attack(busy, str(i), client_ip=f"203.0.113.{i}")
    signal(quiet, "medium")
    assert [s.name for s, _ in rows(viewer)] == ["zzz-busy", "aaa-quiet"]
    expected = {
        "name": ["aaa-quiet", "zzz-busy"],
        "env": ["zzz-busy", "aaa-quiet"],
        "suspicious": ["aaa-quiet", "zzz-busy"],
        "attempts": ["aaa-quiet", "zzz-busy"],
        "attackers": ["aaa-quiet", "zzz-busy"],
        "signals": ["zzz-busy", "aaa-quiet"],
        "asm": ["aaa-quiet", "zzz-busy"],
        "last_seen": ["aaa-quiet", "zzz-busy"],
    }
    for key, ascending in expected.items():
        assert [s.name for s, _ in rows(viewer, f"sort={key}")] == ascending, key
        assert [s.name for s, _ in rows(viewer, f"sort=-{key}")] == ascending[::-1], key
    # An unknown sort or window falls back to the defaults rather than failing.
    assert [s.name for s, _ in rows(viewer, "sort=bogus&window=1y")] == ["zzz-busy", "aaa-quiet"]


def test_queries_do_not_grow_with_the_services_shown(viewer: Client) -> None:
    counts = []
    for n in (2, 30):
        Service.objects.all().delete()
        for i in range(n):
            service = ServiceFactory.create(name=f"svc-{i}", env="prod")
            attack(service, str(i))
            signal(service, "low")
        with CaptureQueriesContext(connection) as queries:
            rows(viewer)
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_enable_asm_instructions_for_the_services_language(viewer: Client) -> None:
    service = ServiceFactory.create(name="orders", env="prod", language="nodejs", contact="o@x.io")
    page = viewer.get(f"/services/{service.pk}/enable-asm/")
    assert page.status_code == 200
    languages = page.context["languages"]
    assert [language.name for language in languages] == [
        "Python",
        "Java",
        "Node.js",
        "Go",
        "Ruby",
        "PHP",
        ".NET",
    ]
    assert [language.key for language in languages if language.selected] == ["nodejs"]
    body = page.content.decode()
    assert "DD_APPSEC_ENABLED=true" in body
    assert f"DD_TRACE_AGENT_URL={settings.ASM_BASE_URL}" in body
    assert f"/services/{service.pk}/enable-asm/" in page.context["link"]
    assert "mailto:o@x.io?subject=Enable%20ASM" in body
    assert "require('dd-trace').init({ appsec: true })" in page.content.decode().replace(
        "&#x27;", "'"
    )


def test_catalog_links_services_without_asm_to_the_instructions(viewer: Client) -> None:
    off = ServiceFactory.create(name="legacy", env="prod", asm_enabled=False)
    body = viewer.get("/services/").content.decode()
    assert f"/services/{off.pk}/enable-asm/" in body
    assert viewer.get("/services/999999/enable-asm/").status_code == 404
