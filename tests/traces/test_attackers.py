"""The Attackers (client IPs) and Users pages."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import Role
from services.models import Service
from signals.models import DenylistEntry
from tests.factories import ServiceFactory, UserFactory
from traces.models import SecurityEvent
from traces.selectors import attacker_page

pytestmark = pytest.mark.django_db


def attack(service: Service, span_id: str, **values: Any) -> SecurityEvent:
    fields: dict[str, Any] = {
        "trace_id": "e" * 32,
        "span_id": span_id,
        "service": service,
        "env": service.env,
        "source": "tracer",
        "rule_id": "crs-942-100",
        "rule_type": "sql_injection",
        "client_ip": "203.0.113.7",
        "detected_at": timezone.now() - timedelta(minutes=5),
    }
    return SecurityEvent.objects.create(**(fields | values))


def test_attackers_by_ip_most_active_first() -> None:
    web = ServiceFactory.create(name="web", env="prod")
    api = ServiceFactory.create(name="api", env="prod")
    attack(web, "1")
    attack(web, "1", rule_type="xss", rule_id="crs-941-100")
    attack(api, "2", blocked=True)
    attack(web, "3", client_ip="198.51.100.4", user="alice")
    attack(web, "4", client_ip="198.51.100.4", detected_at=timezone.now() - timedelta(days=3))
    DenylistEntry.objects.create(kind="ip", value="203.0.113.0/24", reason="scanner")
    rows, total = attacker_page(by="client_ip")
    assert total == 2
    first, second = rows
    assert (first.key, first.requests, first.services, first.blocked_requests) == (
        "203.0.113.7",
        2,
        2,
        1,
    )
    assert first.categories == ["sql_injection", "xss"]
    assert first.denylisted  # inside a denylisted network
    assert (second.key, second.requests, second.denylisted) == ("198.51.100.4", 1, False)
    assert attacker_page(by="client_ip", window="7d")[0][1].requests == 2

    users, total = attacker_page(by="user")
    assert (total, users[0].key, users[0].requests) == (1, "alice", 1)


def test_the_pages_show_attackers_and_users_as_text(client: Client) -> None:
    client.force_login(UserFactory.create(role=Role.VIEWER))
    web = ServiceFactory.create(name="web", env="prod")
    attack(web, "1", user="<img src=x onerror=alert(1)>")
    page = client.get("/suspicious-requests/attackers/")
    assert page.status_code == 200
    assert "203.0.113.7" in page.content.decode()
    body = client.get("/suspicious-requests/users/").content.decode()
    assert "<img src=x" not in body
    assert "&lt;img src=x onerror=alert(1)&gt;" in body
    partial = client.get("/suspicious-requests/users/?window=7d", HTTP_HX_REQUEST="true")
    assert partial.content.decode().lstrip().startswith('<div id="attacker-table">')
    assert client.get("/suspicious-requests/attackers/?window=1y&page=x").status_code == 200
