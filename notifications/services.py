"""State changes of channels and notification rules (the outbox is in outbox.py, sending in
delivery.py)."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from urllib.parse import urlsplit

from django.db import transaction

from accounts.models import User
from notifications.models import Channel, NotificationRule

SECRET_BYTES = 32


def webhook_secret_new() -> str:
    return f"whsec_{secrets.token_urlsafe(SECRET_BYTES)}"


def mask_secret(secret: str) -> str:
    return f"…{secret[-4:]}" if secret else ""


def mask_url(url: str) -> str:
    """A saved URL as pages show it: the host and the last characters. Slack webhook URLs
    are credentials, and webhook URLs often carry a token too."""
    if not url:
        return ""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…{url[-4:]}"


@transaction.atomic
def channel_create(
    *, name: str, kind: str, email_to: str, url: str, enabled: bool, actor: User | None
) -> tuple[Channel, str]:
    """A new channel, and the secret to show once (webhooks; empty for the others)."""
    secret = webhook_secret_new() if kind == Channel.Kind.WEBHOOK else ""
    channel = Channel.objects.create(
        name=name,
        kind=kind,
        email_to=email_to if kind == Channel.Kind.EMAIL else "",
        url=url if kind != Channel.Kind.EMAIL else "",
        secret=secret,
        enabled=enabled,
        created_by=actor,
    )
    return channel, secret


@transaction.atomic
def channel_update(
    *,
    channel: Channel,
    name: str,
    email_to: str,
    url: str,
    enabled: bool,
    rotate_secret: bool,
) -> tuple[Channel, str]:
    """Save a channel's changes; an empty URL keeps the saved one (pages never show it in
    full). Returns the new secret to show once when it was rotated."""
    channel.name = name
    channel.enabled = enabled
    if channel.kind == Channel.Kind.EMAIL:
        channel.email_to = email_to
    elif url:
        channel.url = url
    secret = ""
    if channel.kind == Channel.Kind.WEBHOOK and rotate_secret:
        secret = channel.secret = webhook_secret_new()
    channel.save()
    return channel, secret


@transaction.atomic
def channel_delete(*, channel: Channel) -> None:
    # Its notifications and their delivery log go with it (CASCADE).
    channel.delete()


@transaction.atomic
def notification_rule_save(
    *,
    rule: NotificationRule | None,
    name: str,
    enabled: bool,
    severities: list[str],
    rule_types: list[str],
    rule_ids: list[str],
    services: list[str],
    envs: list[str],
    channels: Iterable[Channel],
    actor: User | None,
    vulnerabilities: bool = False,
) -> NotificationRule:
    if rule is None:
        rule = NotificationRule(created_by=actor)
    rule.name = name
    rule.enabled = enabled
    rule.severities = sorted(set(severities))
    rule.rule_types = sorted(set(rule_types))
    rule.rule_ids = sorted(set(rule_ids))
    rule.services = sorted(set(services))
    rule.envs = sorted(set(envs))
    rule.vulnerabilities = vulnerabilities
    rule.save()
    rule.channels.set(list(channels))
    return rule


@transaction.atomic
def notification_rule_delete(*, rule: NotificationRule) -> None:
    # Notifications already written keep their history; their rule becomes null.
    rule.delete()
