"""The attack summary (home page): traffic over time, most attacked services and routes, top
attackers and open signals, for a window."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import Role
from services.models import Service
from signals.models import Signal
from tests.factories import ServiceFactory, UserFactory
from traces.models import SecurityEvent
from traces.selectors import attack_summary

pytestmark = pytest.mark.django_db


def attack(service: Service, span_id: str, **values: Any) -> SecurityEvent:
    fields: dict[str, Any] = {
        "trace_id": "d" * 32,
        "span_id": span_id,
        "service": service,
        "env": service.env,
        "source": "tracer",
        "rule_id": "crs-942-100",
        "rule_type": "sql_injection",
        "client_ip": "203.0.113.7",
        "route": "/search",
        "detected_at": timezone.now() - timedelta(minutes=30),
    }
    return SecurityEvent.objects.create(**(fields | values))


def test_the_summary_aggregates_the_window() -> None:
    web = ServiceFactory.create(name="web", env="prod")
    api = ServiceFactory.create(name="api", env="prod")
    attack(web, "1")
    attack(web, "1", rule_id="crs-941-100")  # the same request, another rule
    attack(web, "2", client_ip="198.51.100.9", blocked=True, route="/login")
    attack(api, "3", route="/v1/items")
    attack(api, "4", detected_at=timezone.now() - timedelta(days=2))
    now = timezone.now()
    Signal.objects.create(
        rule_id="r",
        rule_name="r",
        title="t",
        severity="high",
        group_key="a",
        service=web,
        first_seen=now,
        last_seen=now,
    )
    summary = attack_summary(window="24h")
    assert (summary.requests, summary.attackers, summary.blocked) == (3, 2, 1)
    assert [(row["service__name"], row["requests"]) for row in summary.services] == [
        ("web", 2),
        ("api", 1),
    ]
    assert {row["route"]: row["requests"] for row in summary.routes} == {
        "/search": 1,
        "/login": 1,
        "/v1/items": 1,
    }
    assert [(row["client_ip"], row["requests"]) for row in summary.top_attackers] == [
        ("203.0.113.7", 2),
        ("198.51.100.9", 1),
    ]
    assert summary.signals == [("high", 1)]
    assert len(summary.bars) == 24
    assert sum(bar.requests for bar in summary.bars) == 3
    assert sum(bar.blocked for bar in summary.bars) == 1
    assert max(bar.height for bar in summary.bars) == 100
    assert attack_summary(window="7d").requests == 4


def test_the_home_page_shows_the_summary(client: Client) -> None:
    client.force_login(UserFactory.create(role=Role.VIEWER))
    web = ServiceFactory.create(name="<b>web</b>", env="prod")
    attack(web, "1", route="<script>alert(1)</script>")
    page = client.get("/")
    assert page.status_code == 200
    body = page.content.decode()
    assert "Attack summary" in body
    assert f"service={web.pk}" in body
    assert "<script>alert(1)</script>" not in body
    assert "&lt;b&gt;web&lt;/b&gt;" in body
    partial = client.get("/?window=7d", HTTP_HX_REQUEST="true").content.decode()
    assert partial.lstrip().startswith('<div id="summary">')
    # An unknown window falls back to the default rather than failing.
    assert client.get("/?window=1y").status_code == 200
