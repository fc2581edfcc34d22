"""The weekly digest in a user's settings: subscribing, the schedule, and the preview."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import Role, User
from notifications.models import DigestSubscription
from tests.factories import ServiceFactory, UserFactory
from traces.models import SecurityEvent

pytestmark = pytest.mark.django_db

URL = "/notifications/digest/"
PREVIEW = "/notifications/digest/preview/"
HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


def form(**values: Any) -> dict[str, Any]:
    return {"enabled": "on", "weekday": "4", "hour": "17", "timezone": "Asia/Tokyo"} | values


def test_signed_out_visitors_are_sent_to_sign_in(client: Client) -> None:
    for url in (URL, PREVIEW):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")
    assert client.post(URL, form()).status_code == 302
    assert not DigestSubscription.objects.exists()


@pytest.mark.parametrize("role", list(Role))
def test_any_signed_in_user_subscribes(client_for: Callable[[User], Client], role: Role) -> None:
    user = UserFactory.create(role=role)
    client = client_for(user)
    page = client.get(URL)
    assert page.status_code == 200
    assert b"You are not subscribed." in page.content
    assert b'<option value="Asia/Tokyo">Asia/Tokyo</option>' in page.content

    response = client.post(URL, form())
    assert response.status_code == 302
    assert response["Location"] == URL
    subscription = DigestSubscription.objects.get(user=user)
    assert (
        subscription.enabled,
        subscription.weekday,
        subscription.hour,
        subscription.timezone,
    ) == (
        True,
        4,
        17,
        "Asia/Tokyo",
    )
    page = client.get(URL)
    assert b"every Friday at 17:00 (Asia/Tokyo)" in page.content
    assert b"The next one goes out" in page.content


def test_unsubscribing_keeps_the_schedule(client_for: Callable[[User], Client]) -> None:
    user = UserFactory.create()
    DigestSubscription.objects.create(user=user, weekday=2, hour=8, timezone="Europe/Paris")
    client = client_for(user)
    # An unticked checkbox is absent from the form.
    response = client.post(URL, {"weekday": "2", "hour": "8", "timezone": "Europe/Paris"})
    assert response.status_code == 302
    subscription = DigestSubscription.objects.get(user=user)
    assert not subscription.enabled
    assert (subscription.weekday, subscription.hour, subscription.timezone) == (
        2,
        8,
        "Europe/Paris",
    )
    assert b"You are not subscribed." in client.get(URL).content


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"timezone": ""}, "timezone"),
        ({"weekday": "7"}, "weekday"),
        ({"hour": "24"}, "hour"),
        ({"hour": "nine"}, "hour"),
    ],
)
def test_invalid_choices_are_refused(
    client_for: Callable[[User], Client], values: dict[str, str], field: str
) -> None:
    response = client_for(UserFactory.create()).post(URL, form(**values))
    assert response.status_code == 400
    assert field in response.context["form"].errors
    assert not DigestSubscription.objects.exists()


def test_an_account_without_email_cannot_subscribe(client_for: Callable[[User], Client]) -> None:
    client = client_for(UserFactory.create(email=""))
    assert b"Your account has no email address" in client.get(URL).content
    response = client.post(URL, form())
    assert response.status_code == 400
    assert "enabled" in response.context["form"].errors
    assert not DigestSubscription.objects.exists()


def test_users_change_only_their_own_subscription(client_for: Callable[[User], Client]) -> None:
    other = UserFactory.create()
    DigestSubscription.objects.create(user=other, weekday=1, hour=7, timezone="UTC")
    me = UserFactory.create()
    # Whatever the request carries, the subscription is the signed-in user's.
    response = client_for(me).post(URL, form(user=str(other.pk), user_id=str(other.pk)))
    assert response.status_code == 302
    theirs = DigestSubscription.objects.get(user=other)
    assert (theirs.enabled, theirs.weekday, theirs.hour, theirs.timezone) == (True, 1, 7, "UTC")
    assert DigestSubscription.objects.get(user=me).timezone == "Asia/Tokyo"
    # And the page shows only mine.
    page = client_for(me).get(URL)
    assert b"every Friday at 17:00" in page.content


def test_the_settings_page_links_to_the_digest(client_for: Callable[[User], Client]) -> None:
    page = client_for(UserFactory.create()).get("/settings/")
    assert b'href="/notifications/digest/"' in page.content


def test_the_preview_is_the_next_digest_as_sent(
    client_for: Callable[[User], Client], settings: Any
) -> None:
    settings.ASM_BASE_URL = "https://asm.example.com"
    user = UserFactory.create(username="pat")
    now = timezone.now()
    # This week's digest went out: the next one covers the week running now (its moment is
    # half a day from now, away from the event).
    DigestSubscription.objects.create(
        user=user,
        weekday=now.weekday(),
        hour=(now.hour + 12) % 24,
        timezone="UTC",
        last_week_sent=now.date() - timedelta(days=now.weekday()),
    )
    service = ServiceFactory.create(name=f"svc{HOSTILE}")
    SecurityEvent.objects.create(
        trace_id="e" * 32,
        span_id="1" * 16,
        service=service,
        source="tracer",
        rule_id="crs-942-100",
        route=f"/r{HOSTILE}",
        client_ip="203.0.113.9",
        detected_at=now - timedelta(minutes=5),
    )
    client = client_for(user)
    response = client.get(PREVIEW)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "Weekly security digest" in html
    assert "203.0.113.9" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html
    assert "Sent to pat every week" in html
    assert 'href="https://asm.example.com/notifications/digest/"' in html
    # The email's inline styles are allowed on this page, and nothing else is.
    policy = response["Content-Security-Policy"]
    assert "style-src 'unsafe-inline'" in policy
    assert "default-src 'none'" in policy
    assert "script-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy

    text = client.get(PREVIEW, {"format": "text"})
    assert text["Content-Type"] == "text/plain; charset=utf-8"
    assert f"/r{HOSTILE} (svc{HOSTILE}): 1" in text.content.decode()


def test_a_user_who_is_not_subscribed_can_preview(client_for: Callable[[User], Client]) -> None:
    user = UserFactory.create()
    response = client_for(user).get(PREVIEW)
    assert response.status_code == 200
    assert b"Weekly security digest" in response.content
    assert not DigestSubscription.objects.exists()


def test_the_console_pages_keep_their_strict_policy(client_for: Callable[[User], Client]) -> None:
    response = client_for(UserFactory.create()).get(URL)
    assert "'unsafe-inline'" not in response["Content-Security-Policy"]
