"""Transports: one class per channel kind, each with a single `notify()` that sends one
notification and says how it went, as healthchecks' `hc/api/transports.py` does.

`notify()` never raises for a failed delivery: it returns a `Result` that is ok, a temporary
failure (a timeout, a connection error, 429, 5xx: worth another attempt later) or a
permanent one (any other 4xx, a refused address, a bad URL: retrying cannot help).
Slack and webhook requests go through notifications.outbound, which refuses private and
metadata addresses.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from email.message import Message as MailHeaders
from typing import Any

from django.conf import settings
from django.core.mail import BadHeaderError, EmailMultiAlternatives, get_connection
from django.template.loader import render_to_string

from notifications import outbound
from notifications.content import (
    Message,
    VulnerabilityMessage,
    message_for,
    vulnerability_message_for,
)
from notifications.models import Channel, Notification

SIGNATURE_HEADER = "X-ASM-Signature"
TIMESTAMP_HEADER = "X-ASM-Timestamp"
EVENT_HEADER = "X-ASM-Event"
DELIVERY_HEADER = "X-ASM-Delivery"
MAX_ERROR = 1000
MAX_RETRY_AFTER = 3600
# Per request hop (connecting, sending, reading); at most 3 redirects follow.
HTTP_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Result:
    ok: bool
    temporary: bool = False
    status_code: int | None = None
    error: str = ""
    # Seconds the receiver asked us to wait (Retry-After of a 429 or 503).
    retry_after: int | None = None

    @classmethod
    def sent(cls, status_code: int | None = None) -> Result:
        return cls(ok=True, status_code=status_code)

    @classmethod
    def temporary_failure(
        cls, error: str, status_code: int | None = None, retry_after: int | None = None
    ) -> Result:
        return cls(False, True, status_code, error[:MAX_ERROR], retry_after)

    @classmethod
    def permanent_failure(cls, error: str, status_code: int | None = None) -> Result:
        return cls(False, False, status_code, error[:MAX_ERROR])


class Transport(ABC):
    """Sends a notification to one channel: the one contract every kind of channel keeps."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    @abstractmethod
    def notify(self, notification: Notification) -> Result: ...


# --- email -------------------------------------------------------------------------------------


def _one_line(text: str, limit: int = 200) -> str:
    # Subjects are headers: a newline in a signal's title must not end up as one.
    return " ".join(text.split())[:limit]


def _email_parts(notification: Notification) -> tuple[str, str, dict[str, Any]]:
    """The subject, the template name (without extension) and its context."""
    if notification.vulnerability_id is not None:
        about = vulnerability_message_for(notification)
        subject = f"[ASM] [{about.severity.upper()}] {about.headline}: {about.title}"
        return _one_line(subject), "notifications/email/vulnerability", {"message": about}
    message = message_for(notification)
    subject = f"[ASM] [{message.severity.upper()}] {message.title}"
    return _one_line(subject), "notifications/email/notification", {"message": message}


class EmailTransport(Transport):
    def recipients(self) -> list[str]:
        return [address.strip() for address in self.channel.email_to.split(",") if address.strip()]

    def notify(self, notification: Notification) -> Result:
        subject, template, context = _email_parts(notification)
        email = EmailMultiAlternatives(
            subject=subject,
            body=render_to_string(f"{template}.txt", context),
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=self.recipients(),
            headers={"X-ASM-Notification": str(notification.pk)},
            connection=get_connection(fail_silently=False),
        )
        email.attach_alternative(render_to_string(f"{template}.html", context), "text/html")
        try:
            email.send()
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            text = f"recipients refused: {', '.join(sorted(exc.recipients))}"
            if all(code >= 500 for code in codes):
                return Result.permanent_failure(text)
            return Result.temporary_failure(text)
        except smtplib.SMTPResponseException as exc:
            error = exc.smtp_error
            reply = error.decode("utf-8", "replace") if isinstance(error, bytes) else str(error)
            text = f"SMTP {exc.smtp_code}: {reply}"
            if exc.smtp_code >= 500:
                return Result.permanent_failure(text)
            return Result.temporary_failure(text)
        except (BadHeaderError, ValueError) as exc:
            return Result.permanent_failure(f"cannot build the email: {exc}")
        except (smtplib.SMTPException, OSError) as exc:
            # Disconnections, timeouts, refused connections: the server may be back later.
            return Result.temporary_failure(f"SMTP: {exc.__class__.__name__}: {exc}")
        return Result.sent()


# --- HTTP --------------------------------------------------------------------------------------


def _retry_after(headers: MailHeaders) -> int | None:
    value = (headers.get("Retry-After") or "").strip()
    if not value.isdigit():
        return None
    return min(int(value), MAX_RETRY_AFTER)


def http_result(post: Any) -> Result:
    """Send through the outbound helper and classify the outcome."""
    try:
        response: outbound.Response = post()
    except outbound.OutboundError as exc:
        if exc.temporary:
            return Result.temporary_failure(str(exc))
        return Result.permanent_failure(str(exc))
    status = response.status
    if 200 <= status < 300:
        return Result.sent(status)
    error = f"HTTP {status}: {response.text(300).strip()}".strip().rstrip(":")
    if status in (408, 429) or status >= 500:
        return Result.temporary_failure(error, status, _retry_after(response.headers))
    return Result.permanent_failure(error, status)


def _slack_escape(text: str) -> str:
    # Slack's only control characters in text: `<...>` makes links and @channel mentions.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _people(rows: list[Any]) -> str:
    return ", ".join(f"`{_slack_escape(row.value)}` ({row.count})" for row in rows) or "none"


SEVERITY_EMOJI = {
    "info": ":white_circle:",
    "low": ":large_blue_circle:",
    "medium": ":large_yellow_circle:",
    "high": ":large_orange_circle:",
    "critical": ":red_circle:",
}


def _slack_message(
    message: Message | VulnerabilityMessage,
    *,
    fields: list[dict[str, str]],
    details: str,
    text: str,
    link_label: str = "Open in ASM Console",
) -> dict[str, Any]:
    """A Slack message: headline, linked title, the severity and service fields first, then
    `fields`, a `details` section, and a button back to the console. Every value in `fields`
    and `details` is escaped by the caller."""
    title = _slack_escape(message.title)
    severity = message.severity.upper()
    if message.previous_severity:
        severity = f"{message.previous_severity.upper()} → {severity}"
    emoji = SEVERITY_EMOJI.get(message.severity, "")
    where = _slack_escape(_where(message))
    return {
        # The notification's text, where blocks are not shown (push notifications).
        "text": f"{message.headline}: {title}{text}",
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": message.headline[:150], "emoji": True},
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*<{message.url}|{title}>*"}},
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*Severity*\n{emoji} {severity}"},
                    {"type": "mrkdwn", "text": f"*Service / env*\n{where}"},
                    *fields,
                ],
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": details}},
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": link_label},
                        "url": message.url,
                    }
                ],
            },
        ],
    }


def _where(message: Message | VulnerabilityMessage) -> str:
    return " / ".join(filter(None, [message.service, message.env])) or "unknown service"


def slack_payload(message: Message) -> dict[str, Any]:
    fields = [
        {"type": "mrkdwn", "text": f"*Rule*\n{_slack_escape(message.rule_name)}"},
        {"type": "mrkdwn", "text": f"*Events*\n{message.event_count}"},
    ]
    attackers = f"*Attacker IPs:* {_people(message.ips)}"
    if message.users:
        attackers += f"\n*Users:* {_people(message.users)}"
    if message.routes:
        attackers += f"\n*Routes:* {_people(message.routes)}"
    return _slack_message(
        message,
        fields=fields,
        details=attackers,
        text=f" ({_slack_escape(_where(message))})",
        link_label="Open in ASM Console" if message.signal_id else "Open ASM Console",
    )


def _slack_code(text: str) -> str:
    # Inline code cannot hold a backtick; a library name or version from telemetry could.
    inner = _slack_escape(text).replace("`", "'")
    return f"`{inner}`"


def slack_vulnerability_payload(message: VulnerabilityMessage) -> dict[str, Any]:
    advisory = _slack_code(message.advisory_id)
    if message.aliases:
        advisory += " (" + ", ".join(_slack_code(alias) for alias in message.aliases) + ")"
    fixed = ", ".join(_slack_code(version) for version in message.fixed_versions)
    fields = [
        {
            "type": "mrkdwn",
            "text": f"*Library*\n{_slack_code(message.library)} {_slack_code(message.version)}",
        },
        {"type": "mrkdwn", "text": f"*Fixed in*\n{fixed or 'no fixed version known'}"},
        {"type": "mrkdwn", "text": f"*Advisory*\n{advisory}"},
        {
            "type": "mrkdwn",
            "text": "*Reachable*\n"
            + ("yes: a vulnerable function was called" if message.reachable else "not seen"),
        },
    ]
    details = _slack_escape(message.summary) or "No summary in the advisory."
    if message.reasons:
        details += "\n*Severity adjusted:* " + _slack_escape("; ".join(message.reasons))
    return _slack_message(message, fields=fields, details=details, text="")


def _content(notification: Notification) -> Message | VulnerabilityMessage:
    if notification.vulnerability_id is not None:
        return vulnerability_message_for(notification)
    return message_for(notification)


class SlackTransport(Transport):
    def notify(self, notification: Notification) -> Result:
        message = _content(notification)
        payload = (
            slack_vulnerability_payload(message)
            if isinstance(message, VulnerabilityMessage)
            else slack_payload(message)
        )
        body = json.dumps(payload).encode()
        return http_result(
            lambda: outbound.post(
                self.channel.url,
                body=body,
                headers={"Content-Type": "application/json"},
                timeout=HTTP_TIMEOUT,
            )
        )


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 of `timestamp.body` under the channel's secret, hex-encoded."""
    signed = timestamp.encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


class WebhookTransport(Transport):
    def notify(self, notification: Notification) -> Result:
        message = _content(notification)
        body = json.dumps(message.as_json(), separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            EVENT_HEADER: message.event,
            # The same on every attempt: receivers drop what they already handled.
            DELIVERY_HEADER: str(notification.pk),
        }
        if self.channel.secret:
            signature = webhook_signature(self.channel.secret, timestamp, body)
            headers[SIGNATURE_HEADER] = f"sha256={signature}"
        return http_result(
            lambda: outbound.post(
                self.channel.url, body=body, headers=headers, timeout=HTTP_TIMEOUT
            )
        )


TRANSPORTS: dict[str, type[Transport]] = {
    Channel.Kind.EMAIL: EmailTransport,
    Channel.Kind.SLACK: SlackTransport,
    Channel.Kind.WEBHOOK: WebhookTransport,
}


def transport_for(channel: Channel) -> Transport:
    return TRANSPORTS[channel.kind](channel)
