"""Screenshots of the console's main pages over realistic data, for the README and as CI
artifacts: the real ddtrace captures replayed through the agent intake (moved to the last
minutes, and once more under two other service names so the catalog has more than one row),
processed, evaluated into signals, then triaged the way a person would.

Without E2E_SCREENSHOT_DIR this still opens every page and checks it renders cleanly; with it,
`E2E_SCREENSHOT_DIR=docs/screenshots` refreshes the README's images.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import msgpack
import pytest
from django.db.models import Count
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import BrowserContext, Page, expect

from accounts.models import Role, User
from notifications.models import Channel, Delivery, Notification
from notifications.services import channel_create, notification_rule_save
from services.models import Service
from signals import denylist, passlist, triage
from signals.evaluation import signals_evaluate
from signals.models import Severity, Signal
from tests.factories import UserFactory
from tests.traces.replay import TRACE_CAPTURES, body, capture, process_pending, tracer_headers
from traces.client_ip import is_public
from traces.models import SecurityEvent, Span

if TYPE_CHECKING:
    from tests.e2e.conftest import ConsoleLog

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

NewContext = Callable[..., BrowserContext]
SignIn = Callable[[BrowserContext, User], None]
Screenshot = Callable[[Page, str], None]

# Replayed again under these names, with other ids: (service, id offset).
OTHER_SERVICES = (("checkout-api", 1 << 40), ("accounts-api", 2 << 40))


def _shifted(name: str, *, service: str | None = None, id_offset: int = 0) -> bytes:
    """A capture's msgpack body with its spans moved so that the last one started a few
    minutes ago; optionally renamed and given other ids."""
    traces = msgpack.unpackb(body(name), raw=False, strict_map_key=False)
    latest = max(span["start"] for chunk in traces for span in chunk)
    delta = int((time.time() - 5 * 60) * 1e9) - latest
    for chunk in traces:
        for span in chunk:
            span["start"] += delta
            if service is not None and span["service"] == "web-store":
                span["service"] = service
            if id_offset:
                for key in ("trace_id", "span_id"):
                    span[key] += id_offset
                if span.get("parent_id"):
                    span["parent_id"] += id_offset
    return msgpack.packb(traces)


def seed_realistic(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    # process_pending() does the workers' job (see test_safety_browser.py).
    monkeypatch.setattr("traces.intake.batch_dispatch", lambda batch_id: None)
    monkeypatch.setattr("notifications.outbox.notifications_dispatch", lambda ids: None)
    admin = UserFactory.create(username="ada", role=Role.ADMIN)
    mel = UserFactory.create(username="mel", role=Role.MEMBER)
    channel, _ = channel_create(
        name="#security-alerts",
        kind=Channel.Kind.SLACK,
        email_to="",
        url="https://hooks.slack.com/services/T000/B000/XXXXXXXX",
        enabled=True,
        actor=admin,
    )
    notification_rule_save(
        rule=None,
        name="High and critical signals in production",
        enabled=True,
        severities=[Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL],
        rule_types=[],
        rule_ids=[],
        services=[],
        envs=[],
        channels=[channel],
        actor=admin,
    )
    client = Client()
    # The v0.4 captures: their spans are plain maps, easy to move in time (v0.5 ones are not).
    captures = [name for name in TRACE_CAPTURES if name.startswith("v04")]
    replays = [(name, None, 0) for name in captures] + [
        (name, service, offset)
        for service, offset in OTHER_SERVICES
        for name in captures
        if name.startswith(("v04_02", "v04_03", "v04_05"))
    ]
    for name, service, offset in replays:
        meta: dict[str, Any] = {"REMOTE_ADDR": "127.0.0.1", **tracer_headers(name)}
        response = client.post(
            capture(name)["_capture"]["path"],
            _shifted(name, service=service, id_offset=offset),
            content_type="application/msgpack",
            **meta,
        )
        assert response.status_code == 200, (name, response.content)
    process_pending()
    signals_evaluate()
    signals = list(Signal.objects.order_by("-severity", "pk"))
    assert signals, "the captures raise no signal"

    # Triage, as the team would.
    scanner = next((s for s in signals if s.rule_id == "security-scanner"), signals[-1])
    passlist.passfilter_create(
        actor=mel,
        reason="Our weekly Nikto scan from the pentest box.",
        expires_at=timezone.now() + timedelta(days=30),
        scopes=passlist.PassScopes(service=scanner.service.name, rule_id="nikto-scanner")
        if scanner.service
        else passlist.PassScopes(rule_id="nikto-scanner"),
        signal=scanner,
    )
    attacked, ip = next(
        (signal, ip)
        for signal in signals
        for ip in signal.attackers.get("ips") or {}
        if is_public(ipaddress.ip_address(ip))
    )
    denylist.signal_block(
        signal=attacked,
        actor=mel,
        reason="sqlmap against the checkout; not ours.",
        expires_at=timezone.now() + timedelta(days=7),
        ips=[ip],
    )
    triage.signal_assign(signal=attacked, assignee=mel, actor=admin)
    triage.signal_comment(
        signal=attacked, actor=mel, message="Blocked the source; checking the 5xx routes."
    )
    for attempt, notification in enumerate(Notification.objects.order_by("pk"), start=1):
        ok = attempt % 3 != 0
        Delivery.objects.create(
            notification=notification,
            attempt=1,
            started_at=timezone.now(),
            duration_ms=180 + 20 * attempt,
            ok=ok,
            status_code=200 if ok else 503,
            temporary=not ok,
            error="" if ok else "HTTP 503 from hooks.slack.com; retrying",
        )
        Notification.objects.filter(pk=notification.pk).update(
            state=Notification.State.SENT if ok else Notification.State.PENDING,
            attempts=1,
            sent_at=timezone.now() if ok else None,
        )
    # The attacked trace that reaches the most services: the richest attack flow.
    attacked_traces = set(SecurityEvent.objects.values_list("trace_id", flat=True))
    trace_id = (
        Span.objects.filter(trace_id__in=attacked_traces)
        .values("trace_id")
        .annotate(services=Count("service_name", distinct=True))
        .order_by("-services", "trace_id")
        .values_list("trace_id", flat=True)
        .first()
    )
    return {
        "admin": admin,
        "service": Service.objects.order_by("name").first(),
        "checkout": Service.objects.get(name="checkout-api"),
        "signal": attacked,
        "trace_id": trace_id,
    }


def test_screenshots_of_the_main_pages(
    transactional_db: None,
    monkeypatch: pytest.MonkeyPatch,
    new_context: NewContext,
    sign_in: SignIn,
    console_log: ConsoleLog,
    screenshot: Screenshot,
) -> None:
    seeded = seed_realistic(monkeypatch)
    context = new_context(viewport={"width": 1280, "height": 800})
    sign_in(context, seeded["admin"])
    page = context.new_page()
    console_log.watch(page)
    shots = [
        ("summary", "/", "Attack summary"),
        ("catalog", reverse("services:catalog"), "Service catalog"),
        (
            "enable-asm",
            reverse("services:enable_asm", args=[seeded["service"].pk]),
            "Enable",
        ),
        # One service: the full list makes a very long image.
        (
            "suspicious-requests",
            reverse("traces:suspicious_requests") + f"?service={seeded['checkout'].pk}",
            "Suspicious requests",
        ),
        ("trace", reverse("traces:trace", args=[seeded["trace_id"]]), "Trace"),
        ("attackers", reverse("traces:attackers"), "Attackers"),
        ("signals", reverse("signals:list"), "Signals"),
        ("signal-detail", reverse("signals:detail", args=[seeded["signal"].pk]), ""),
        ("passlist", reverse("signals:passlist"), "Passlist"),
        ("denylist", reverse("signals:denylist"), "Denylist"),
        # One type: the whole rule set makes a very long image.
        ("detection-rules", reverse("signals:rules") + "?type=sql_injection", ""),
        ("notification-rules", reverse("notifications:rules"), ""),
        ("deliveries", reverse("notifications:deliveries"), ""),
    ]
    for number, (name, url, heading) in enumerate(shots, start=1):
        response = page.goto(url)
        assert response is not None
        assert response.status == 200, url
        h1 = page.get_by_role("heading", level=1)
        expect(h1).to_be_visible()
        if heading:
            expect(h1).to_contain_text(re.compile(heading, re.IGNORECASE))
        page.wait_for_load_state("networkidle")
        screenshot(page, f"console-{number:02d}-{name}")
    # The trace page draws the attack flow across services.
    page.goto(reverse("traces:trace", args=[seeded["trace_id"]]))
    expect(page.locator("svg.attack-flow g.flow-node")).not_to_have_count(0)
    assert console_log.errors == []
