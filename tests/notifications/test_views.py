"""Notification pages: viewers read, members edit; secrets and Slack URLs are shown once."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client

from accounts.models import User
from notifications.models import Channel, Delivery, Notification, NotificationRule
from signals.models import Severity
from tests.notifications.support import make_channel, make_rule, make_signal

pytestmark = pytest.mark.django_db

ClientFor = Callable[[User], Client]


@pytest.fixture(autouse=True)
def published_ids(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    published: list[list[int]] = []
    monkeypatch.setattr(
        "notifications.outbox.notifications_dispatch", lambda ids: published.append(ids)
    )
    return published


def test_viewers_read_every_page(client_for: ClientFor, viewer_user: User) -> None:
    channel = make_channel(Channel.Kind.SLACK)
    make_rule(channel, name="Page the SOC")
    notification = Notification.objects.create(
        channel=channel, event="test", next_attempt_at="2026-01-01T00:00:00Z"
    )
    client = client_for(viewer_user)
    rules = client.get("/notifications/")
    assert rules.status_code == 200
    assert b"Page the SOC" in rules.content
    assert b"Add a rule" not in rules.content
    channels = client.get("/notifications/channels/")
    assert channels.status_code == 200
    assert b"https://hooks.example.com/\xe2\x80\xa6XXXX" in channels.content
    assert b"/services/T000/B000/XXXX" not in channels.content
    assert b"Send test" not in channels.content
    assert client.get("/notifications/deliveries/").status_code == 200
    assert client.get(f"/notifications/deliveries/{notification.pk}/").status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/notifications/rules/new/"),
        ("post", "/notifications/rules/new/"),
        ("get", "/notifications/rules/{rule}/"),
        ("post", "/notifications/rules/{rule}/delete/"),
        ("post", "/notifications/channels/"),
        ("get", "/notifications/channels/{channel}/"),
        ("post", "/notifications/channels/{channel}/"),
        ("post", "/notifications/channels/{channel}/delete/"),
        ("post", "/notifications/channels/{channel}/test/"),
    ],
)
def test_viewers_cannot_change_anything(
    client_for: ClientFor, viewer_user: User, method: str, path: str
) -> None:
    channel = make_channel()
    rule = make_rule(channel)
    url = path.format(rule=rule.pk, channel=channel.pk)
    response = getattr(client_for(viewer_user), method)(url, {"name": "x", "kind": "email"})
    assert response.status_code == 403
    assert Channel.objects.count() == NotificationRule.objects.count() == 1
    assert not Notification.objects.exists()


def test_anonymous_visitors_are_sent_to_sign_in(client: Client) -> None:
    response = client.get("/notifications/channels/")
    assert response.status_code == 302
    assert "/login" in response["Location"]


def test_webhook_secret_is_shown_once(client_for: ClientFor, member_user: User) -> None:
    client = client_for(member_user)
    response = client.post(
        "/notifications/channels/",
        {
            "name": "SIEM",
            "kind": "webhook",
            "url": "https://siem.example.com/hook",
            "enabled": "on",
        },
    )
    channel = Channel.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/notifications/channels/{channel.pk}/"
    assert channel.secret.startswith("whsec_")
    assert channel.created_by == member_user
    first = client.get(response["Location"])
    assert channel.secret.encode() in first.content
    second = client.get(response["Location"])
    assert channel.secret.encode() not in second.content
    assert channel.secret[-4:].encode() in second.content
    assert channel.secret.encode() not in client.get("/notifications/channels/").content


def test_slack_url_is_shown_once_and_kept_when_left_empty(
    client_for: ClientFor, member_user: User
) -> None:
    client = client_for(member_user)
    url = "https://hooks.slack.com/services/T123/B456/abcdefSECRET"
    client.post("/notifications/channels/", {"name": "Slack", "kind": "slack", "url": url})
    channel = Channel.objects.get()
    page = f"/notifications/channels/{channel.pk}/"
    assert url.encode() in client.get(page).content
    assert url.encode() not in client.get(page).content
    saved = client.post(page, {"name": "Slack #sec", "url": "", "enabled": "on"})
    assert saved.status_code == 302
    channel.refresh_from_db()
    assert (channel.name, channel.url, channel.enabled) == ("Slack #sec", url, True)


def test_channel_urls_are_checked_when_saved(client_for: ClientFor, member_user: User) -> None:
    client = client_for(member_user)
    for url in ("http://169.254.169.254/latest", "http://127.1:8080/", "ftp://x.example/"):
        response = client.post(
            "/notifications/channels/", {"name": "bad", "kind": "webhook", "url": url}
        )
        assert response.status_code == 400
        assert b"cannot be used" in response.content or b"Enter a valid URL" in response.content
    bad_email = client.post(
        "/notifications/channels/", {"name": "bad", "kind": "email", "email_to": "a@x.com, nope"}
    )
    assert bad_email.status_code == 400
    assert not Channel.objects.exists()


def test_rotating_the_secret_shows_the_new_one_once(
    client_for: ClientFor, member_user: User
) -> None:
    channel = make_channel(Channel.Kind.WEBHOOK, secret="whsec_old")
    client = client_for(member_user)
    page = f"/notifications/channels/{channel.pk}/"
    client.post(page, {"name": channel.name, "rotate_secret": "on", "enabled": "on"})
    channel.refresh_from_db()
    assert channel.secret != "whsec_old"
    assert channel.secret.encode() in client.get(page).content


def test_send_test_enqueues_and_shows_the_delivery(
    client_for: ClientFor,
    member_user: User,
    published_ids: list[list[int]],
    django_capture_on_commit_callbacks,
) -> None:
    channel = make_channel()
    client = client_for(member_user)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/notifications/channels/{channel.pk}/test/")
    notification = Notification.objects.get()
    assert notification.event == Notification.Event.TEST
    assert published_ids == [[notification.pk]]
    assert response["Location"] == f"/notifications/deliveries/{notification.pk}/"
    page = client.get(response["Location"])
    assert b"Waiting for a worker" in page.content
    assert b'hx-trigger="every 2s"' in page.content
    Delivery.objects.create(
        notification=notification,
        attempt=1,
        started_at="2026-01-01T00:00:00Z",
        ok=False,
        temporary=False,
        status_code=404,
        error="HTTP 404: no_service",
    )
    Notification.objects.filter(pk=notification.pk).update(state="failed", attempts=1)
    partial = client.get(response["Location"], headers={"HX-Request": "true"})
    assert b"HTTP 404: no_service" in partial.content
    assert b"<html" not in partial.content
    assert b"every 2s" not in partial.content


def test_members_create_a_rule_and_preview_it(client_for: ClientFor, member_user: User) -> None:
    channel = make_channel()
    make_signal(severity=Severity.HIGH, title="SQLi on checkout")
    make_signal(severity=Severity.LOW, title="low noise")
    client = client_for(member_user)
    form = {
        "name": "High and up",
        "enabled": "on",
        "severities": ["high", "critical"],
        "rule_types": ["sql_injection"],
        "channels": [str(channel.pk)],
    }
    preview = client.post("/notifications/rules/new/", {**form, "preview": "1"})
    assert preview.status_code == 200
    assert b"SQLi on checkout" in preview.content
    assert b"low noise" not in preview.content
    assert not NotificationRule.objects.exists()
    partial = client.post(
        "/notifications/rules/new/", {**form, "preview": "1"}, headers={"HX-Request": "true"}
    )
    assert b'id="rule-preview"' in partial.content
    assert b"<form" not in partial.content
    saved = client.post("/notifications/rules/new/", form)
    assert saved.status_code == 302
    rule = NotificationRule.objects.get()
    assert rule.severities == ["critical", "high"]
    assert rule.rule_types == ["sql_injection"]
    assert list(rule.channels.all()) == [channel]
    assert rule.created_by == member_user
    edit = client.get(f"/notifications/rules/{rule.pk}/")
    assert b"SQLi on checkout" in edit.content
    client.post(f"/notifications/rules/{rule.pk}/delete/")
    assert not NotificationRule.objects.exists()


def test_a_rule_needs_a_severity(client_for: ClientFor, member_user: User) -> None:
    response = client_for(member_user).post("/notifications/rules/new/", {"name": "nothing"})
    assert response.status_code == 400
    assert not NotificationRule.objects.exists()


def test_unknown_ids_are_404(client_for: ClientFor, member_user: User) -> None:
    client = client_for(member_user)
    assert client.get("/notifications/rules/999/").status_code == 404
    assert client.get("/notifications/channels/999/").status_code == 404
    assert client.post("/notifications/channels/999/test/").status_code == 404
    assert client.get("/notifications/deliveries/999/").status_code == 404
