from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import Role
from tests.factories import ServiceFactory, UserFactory
from tests.traces.replay import process_pending, send
from traces.models import SecurityEvent

pytestmark = pytest.mark.django_db


def test_catalog_lists_the_most_attacked_service_first(client: Client) -> None:
    ServiceFactory.create(name="aaa-quiet", env="prod")
    send(client, "v04_05_xff_public_private_nikto")
    process_pending()
    # Replayed captures are dated when they were made: make them recent.
    SecurityEvent.objects.update(detected_at=timezone.now())

    client.force_login(UserFactory.create(role=Role.VIEWER))
    page = client.get("/services/")
    assert [s.name for s in page.context["services"]] == ["web-store", "aaa-quiet"]
    assert [s.suspicious_requests for s in page.context["services"]] == [3, 0]
    assert b"Suspicious requests (24h)" in page.content


def test_attacker_controlled_service_names_are_escaped(client: Client) -> None:
    ServiceFactory.create(name="<script>alert(1)</script>", env="<b>prod</b>")
    client.force_login(UserFactory.create(role=Role.VIEWER))
    page = client.get("/services/").content.decode()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>prod</b>" not in page
