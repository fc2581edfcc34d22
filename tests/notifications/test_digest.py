"""The weekly digest: its sections and numbers, its schedule in each subscriber's time zone,
and one digest per subscriber per week however often the scheduler fires."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.core import mail
from django.core.exceptions import ValidationError

from accounts.models import User
from notifications import digest as digest_module
from notifications.digest import (
    digest_build,
    digest_due_send,
    digest_subscription_save,
    digest_week_due,
    digest_week_next,
)
from notifications.models import DigestSubscription
from services.models import Service
from signals.models import Severity, Signal, SignalActivity
from tests.factories import ServiceFactory, UserFactory
from traces.models import SecurityEvent

pytestmark = pytest.mark.django_db

UTC = ZoneInfo("UTC")
BASE = "https://asm.example.com"
# A Monday, 09:05 UTC: a UTC subscriber's Monday 09:00 digest is due, for the week since
# Monday 3 March 09:00.
NOW = datetime(2025, 3, 10, 9, 5, tzinfo=UTC)
WEEK_START = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
WEEK_END = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _base_url(settings: Any) -> None:
    settings.ASM_BASE_URL = BASE


def attack(service: Service, trace: str, span: str, at: datetime, **values: Any) -> SecurityEvent:
    fields: dict[str, Any] = {
        "trace_id": trace.rjust(32, "0"),
        "span_id": span.rjust(16, "0"),
        "service": service,
        "env": service.env,
        "source": "tracer",
        "rule_id": "crs-942-100",
        "rule_type": "sql_injection",
        "client_ip": "203.0.113.7",
        "route": "/login",
        "detected_at": at,
    }
    return SecurityEvent.objects.create(**(fields | values))


def make_signal(title: str, severity: str, **values: Any) -> Signal:
    fields: dict[str, Any] = {
        "rule_id": "attack-tool",
        "rule_name": "Attack tool",
        "title": title,
        "severity": severity,
        "group_key": title,
        "first_seen": WEEK_START,
        "last_seen": WEEK_START,
    }
    return Signal.objects.create(**(fields | values))


def activity(
    signal: Signal, kind: str, at: datetime, from_value: str = "", to_value: str = ""
) -> None:
    row = SignalActivity.objects.create(
        signal=signal, kind=kind, from_value=from_value, to_value=to_value
    )
    # created_at is set on insert; the digest reads when the change happened.
    SignalActivity.objects.filter(pk=row.pk).update(created_at=at)


def html_of(message: mail.EmailMessage) -> str:
    """The HTML part; the only alternative to the text body."""
    assert isinstance(message, mail.EmailMultiAlternatives)
    ((content, mimetype),) = message.alternatives
    assert mimetype == "text/html"
    return str(content)


def subscribe(user: User, **values: Any) -> DigestSubscription:
    return DigestSubscription.objects.create(user=user, **values)


# --- What the digest says ----------------------------------------------------------------------


@pytest.fixture
def week_of_attacks() -> dict[str, Service]:
    web = ServiceFactory.create(name="web", env="prod")
    api = ServiceFactory.create(name="api", env="prod")
    old = ServiceFactory.create(name="old", env="staging")
    day = timedelta(days=1)
    # This week: web 3 requests (the first matched two rules: one request), api 1.
    attack(web, "a1", "1", WEEK_START + day, route="/login", blocked=True)
    attack(web, "a1", "1", WEEK_START + day, route="/login", rule_id="crs-941-100")
    attack(web, "a2", "2", WEEK_START + 2 * day, route="/login", client_ip="198.51.100.2")
    attack(web, "a3", "3", WEEK_START, route="/search")  # the first second of the week
    attack(api, "a4", "4", WEEK_END - timedelta(seconds=1), route="/items")
    # A passlisted request counts nowhere.
    from signals.models import PassFilter

    entry = PassFilter.objects.create(route="/health", reason="load balancer probe")
    attack(web, "a5", "5", WEEK_START + day, route="/health", excluded_by=entry)
    # At the end of the week: next week's.
    attack(web, "a6", "6", WEEK_END, route="/late")
    # The week before: web 1, api 2, old 1.
    attack(web, "b1", "11", WEEK_START - day, route="/login")
    attack(api, "b2", "12", WEEK_START - 2 * day, route="/items")
    attack(api, "b3", "13", WEEK_START - timedelta(seconds=1), route="/items")
    attack(old, "b4", "14", WEEK_START - 3 * day, route="/admin")
    # Two weeks ago: in neither.
    attack(old, "c1", "21", WEEK_START - 8 * day, route="/admin")
    return {"web": web, "api": api, "old": old}


def test_requests_per_service_with_the_change_from_the_week_before(
    week_of_attacks: dict[str, Service],
) -> None:
    web, api, old = week_of_attacks["web"], week_of_attacks["api"], week_of_attacks["old"]
    digest = digest_build(
        user=UserFactory.create(), week_start=WEEK_START, week_end=WEEK_END, now=NOW
    )
    assert (digest.requests, digest.previous_requests, digest.change) == (4, 4, 0)
    assert digest.attackers == 2
    rows = [
        (r.name, r.env, r.requests, r.previous, r.change, r.change_percent) for r in digest.services
    ]
    assert rows == [
        ("web", "prod", 3, 1, 2, 200),
        ("api", "prod", 1, 2, -1, -50),
        # Quiet this week, attacked the week before: the drop is news too.
        ("old", "staging", 0, 1, -1, -100),
    ]
    assert digest.services_more == 0
    urls = {row.name: row.url for row in digest.services}
    assert urls == {
        "web": f"{BASE}/suspicious-requests/?service={web.pk}&window=7d",
        "api": f"{BASE}/suspicious-requests/?service={api.pk}&window=7d",
        "old": f"{BASE}/suspicious-requests/?service={old.pk}&window=7d",
    }


def test_most_attacked_routes_and_top_attackers(week_of_attacks: dict[str, Service]) -> None:
    digest = digest_build(
        user=UserFactory.create(), week_start=WEEK_START, week_end=WEEK_END, now=NOW
    )
    assert [(r.service_name, r.route, r.requests) for r in digest.routes] == [
        ("web", "/login", 2),
        ("api", "/items", 1),
        ("web", "/search", 1),
    ]
    assert [(a.client_ip, a.requests, a.services, a.blocked) for a in digest.top_attackers] == [
        ("203.0.113.7", 3, 2, 1),
        ("198.51.100.2", 1, 1, 0),
    ]
    assert digest.top_attackers[0].last_seen == WEEK_END - timedelta(seconds=1)
    # Links carry the console's ids and choices, never the IP or route.
    assert {a.url for a in digest.top_attackers} == {
        f"{BASE}/suspicious-requests/attackers/?window=7d"
    }


def test_signals_by_severity_and_what_happened_to_them() -> None:
    day = timedelta(days=1)
    before = WEEK_START - 10 * day
    new_high = make_signal("new high", Severity.HIGH)
    activity(new_high, SignalActivity.Kind.CREATED, WEEK_START + day, to_value="high")
    escalated = make_signal("escalated", Severity.CRITICAL)
    activity(escalated, SignalActivity.Kind.CREATED, before, to_value="medium")
    activity(escalated, SignalActivity.Kind.SEVERITY_CHANGED, WEEK_START + day, "medium", "high")
    activity(
        escalated, SignalActivity.Kind.SEVERITY_CHANGED, WEEK_START + 2 * day, "high", "critical"
    )
    archived = make_signal(
        "archived",
        Severity.MEDIUM,
        status="archived",
        archive_reason="false_positive",
        archived_at=WEEK_START + day,
    )
    activity(archived, SignalActivity.Kind.CREATED, before, to_value="medium")
    activity(
        archived,
        SignalActivity.Kind.STATUS_CHANGED,
        WEEK_START + day,
        "open",
        "archived:false_positive",
    )
    # Created and archived the same week: both.
    brief = make_signal(
        "brief",
        Severity.LOW,
        status="archived",
        archive_reason="resolved",
        archived_at=WEEK_START + day,
    )
    activity(brief, SignalActivity.Kind.CREATED, WEEK_START + day, to_value="low")
    activity(
        brief,
        SignalActivity.Kind.STATUS_CHANGED,
        WEEK_START + 3 * day,
        "under_review",
        "archived:resolved",
    )
    # Archived before, its reason changed this week: not archived again.
    reason_changed = make_signal(
        "reason changed",
        Severity.MEDIUM,
        status="archived",
        archive_reason="resolved",
        archived_at=before,
    )
    activity(
        reason_changed,
        SignalActivity.Kind.STATUS_CHANGED,
        WEEK_START + day,
        "archived:false_positive",
        "archived:resolved",
    )
    # Open since before the week, nothing happened to it but a comment.
    quiet = make_signal("quiet", Severity.HIGH)
    activity(quiet, SignalActivity.Kind.CREATED, before, to_value="high")
    activity(quiet, SignalActivity.Kind.COMMENTED, WEEK_START + day)
    # After the week: next week's.
    late = make_signal("late", Severity.INFO)
    activity(late, SignalActivity.Kind.CREATED, WEEK_END, to_value="info")

    digest = digest_build(
        user=UserFactory.create(), week_start=WEEK_START, week_end=WEEK_END, now=NOW
    )
    table = {r.severity: (r.new, r.escalated, r.archived, r.open) for r in digest.severities}
    assert table == {
        "critical": (0, 1, 0, 1),
        "high": (1, 0, 0, 2),
        "medium": (0, 0, 1, 0),
        "low": (1, 0, 1, 0),
        # Open now (the "late" signal), nothing happened in the week.
        "info": (0, 0, 0, 1),
    }
    assert [r.severity for r in digest.severities] == ["critical", "high", "medium", "low", "info"]
    assert digest.signal_changes == {"new": 2, "escalated": 1, "archived": 2}
    assert [(s.title, s.change) for s in digest.signals] == [
        ("new high", "new"),
        ("brief", "new"),
        ("escalated", "escalated"),
        ("archived", "archived"),
    ]
    assert digest.signals[0].url == f"{BASE}/signals/{new_high.pk}/"
    assert digest.severities[0].url == f"{BASE}/signals/?severity=critical"


def test_a_quiet_week_still_has_its_digest() -> None:
    user = UserFactory.create()
    digest = digest_build(user=user, week_start=WEEK_START, week_end=WEEK_END, now=NOW)
    assert (digest.requests, digest.services, digest.severities, digest.signals) == (0, [], [], [])
    # No new vulnerability: the section stays out rather than saying "none".
    assert digest.vulnerabilities == []
    subscribe(user, weekday=0, hour=9, timezone="UTC")
    assert digest_due_send(now=NOW) == 1
    (message,) = mail.outbox
    assert "No suspicious requests this week" in message.body
    assert "vulnerabilit" not in message.body.lower()
    assert "vulnerabilit" not in html_of(message).lower()


def test_the_email_has_every_section_in_html_and_text(week_of_attacks: dict[str, Service]) -> None:
    user = UserFactory.create(username="sam", email="sam@example.com")
    signal = make_signal("Attack tool on web", Severity.HIGH)
    activity(signal, SignalActivity.Kind.CREATED, WEEK_START + timedelta(days=1), to_value="high")
    subscribe(user, weekday=0, hour=9, timezone="UTC")

    assert digest_due_send(now=NOW) == 1
    (message,) = mail.outbox
    assert message.to == ["sam@example.com"]
    assert message.subject == (
        "Weekly security digest: 4 suspicious requests, 1 new signal (week to 10 Mar 2025)"
    )
    assert message.extra_headers["List-Unsubscribe"] == f"<{BASE}/notifications/digest/>"
    text = message.body
    html = html_of(message)
    assert "Mon 03 Mar 2025 09:00 to Mon 10 Mar 2025 09:00 (UTC)" in text
    assert "- web [prod]: 3 / 1 / +2 (+200%)" in text
    assert "- api [prod]: 1 / 2 / -1 (-50%)" in text
    assert "- /login (web): 2" in text
    assert "- 203.0.113.7: 3 requests, 1 blocked, 2 services" in text
    assert "- High: 1 new, 0 escalated, 0 archived, 1 open now" in text
    assert f"{BASE}/signals/{signal.pk}/" in text
    assert "<" not in text.replace("<" + BASE, "")  # plain text, no markup
    for fragment in (
        "Suspicious requests",
        "Most attacked routes",
        "Top attackers",
        "Signals",
        "+2 (+200%)",
        "/login",
        "203.0.113.7",
        "Attack tool on web",
        f'href="{BASE}/suspicious-requests/?service={week_of_attacks["web"].pk}&amp;window=7d"',
        f'href="{BASE}/notifications/digest/"',
    ):
        assert fragment in html, fragment
    assert "New vulnerabilities" not in html


def test_the_vulnerability_section_lists_the_weeks_new_vulnerabilities() -> None:
    from services.models import Advisory, Vulnerability

    web = ServiceFactory.create(name="web", env="prod")
    advisory = Advisory.objects.create(
        osv_id="GHSA-xxxx-yyyy-zzzz",
        ecosystem="PyPI",
        summary="<b>RCE</b> in templates",
        modified=WEEK_START,
    )

    def vulnerability(library: str, severity: str, detected: Any, **fields: Any) -> Vulnerability:
        return Vulnerability.objects.create(
            service=web,
            env="prod",
            ecosystem="PyPI",
            library=library,
            version="2.10",
            advisory=advisory,
            severity=severity,
            first_detected=detected,
            last_detected=detected,
            **fields,
        )

    new = vulnerability("jinja2", "critical", WEEK_START + timedelta(days=2))
    vulnerability("markupsafe", "low", WEEK_START + timedelta(days=3))
    vulnerability("old-lib", "high", WEEK_START - timedelta(days=3))  # an earlier week
    vulnerability(
        "muted-lib",
        "high",
        WEEK_START + timedelta(days=1),
        status="muted",
        mute_reason="false_positive",
    )
    digest = digest_build(
        user=UserFactory.create(), week_start=WEEK_START, week_end=WEEK_END, now=NOW
    )
    assert [(v.library, v.severity) for v in digest.vulnerabilities] == [
        ("jinja2", "critical"),
        ("markupsafe", "low"),
    ]
    assert digest.vulnerabilities[0].url == f"{BASE}/services/vulnerabilities/{new.pk}/"
    rendered = digest_module.digest_render(digest=digest)
    assert "New vulnerabilities" in rendered.html
    assert "&lt;b&gt;RCE&lt;/b&gt; in templates</a> in jinja2 2.10" in rendered.html
    assert "NEW VULNERABILITIES" in rendered.text


# --- Hostile values ----------------------------------------------------------------------------

HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


def test_trace_values_are_escaped_in_the_html_email() -> None:
    service = ServiceFactory.create(name=f"svc{HOSTILE}", env=f"env{HOSTILE}")
    attack(
        service,
        "h1",
        "1",
        WEEK_START + timedelta(hours=1),
        route=f"/r{HOSTILE}\nhttps://evil.example/",
    )
    signal = make_signal(f"Attack from {HOSTILE}", Severity.HIGH, service=service)
    activity(signal, SignalActivity.Kind.CREATED, WEEK_START + timedelta(hours=2), to_value="high")
    user = UserFactory.create(username=f"u{HOSTILE}", email="u@example.com")
    subscribe(user, weekday=0, hour=9, timezone="UTC")

    assert digest_due_send(now=NOW) == 1
    (message,) = mail.outbox
    html = html_of(message)
    assert "<script" not in html
    assert "<img" not in html
    assert "onerror=alert" not in html.replace("onerror=alert(2)&gt;", "")
    assert (
        "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in html
    )
    # Every link is the console's own.
    hrefs = [part.split('"', 1)[0] for part in html.split('href="')[1:]]
    assert hrefs
    assert all(href.startswith(BASE + "/") for href in hrefs), hrefs
    assert not any("script" in href or "evil" in href for href in hrefs)
    # The text version is plain, the value on one line: it cannot forge a line of its own.
    assert f"/r{HOSTILE} https://evil.example/ (svc{HOSTILE}): 1" in message.body
    assert "\nhttps://evil.example/" not in message.body
    assert HOSTILE not in message.subject


def test_a_hostile_attacker_address_is_escaped() -> None:
    # The database keeps IP addresses valid, so the template's escaping is checked directly.
    digest = digest_build(
        user=UserFactory.create(), week_start=WEEK_START, week_end=WEEK_END, now=NOW
    )
    digest.top_attackers = [
        digest_module.AttackerRow(
            client_ip=HOSTILE, requests=1, services=1, blocked=0, last_seen=NOW, url=f"{BASE}/"
        )
    ]
    html = digest_module.digest_render(digest=digest).html
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_long_values_are_cut_short() -> None:
    service = ServiceFactory.create(name="web")
    attack(service, "l1", "1", WEEK_START + timedelta(hours=1), route="/" + "a" * 499)
    digest = digest_build(
        user=UserFactory.create(), week_start=WEEK_START, week_end=WEEK_END, now=NOW
    )
    assert len(digest.routes[0].route) == 200
    assert digest.routes[0].route.endswith("\u2026")


# --- The schedule ------------------------------------------------------------------------------


def test_each_subscriber_gets_the_digest_at_their_own_hour() -> None:
    tokyo = UserFactory.create(email="tokyo@example.com")
    new_york = UserFactory.create(email="ny@example.com")
    # Both had last week's digest; both want it Monday at 09:00 their time.
    subscribe(tokyo, weekday=0, hour=9, timezone="Asia/Tokyo", last_week_sent=date(2025, 3, 3))
    subscribe(
        new_york, weekday=0, hour=9, timezone="America/New_York", last_week_sent=date(2025, 3, 3)
    )

    # Monday 09:00 in Tokyo is Monday 00:00 UTC; in New York it is Sunday evening.
    assert digest_due_send(now=datetime(2025, 3, 9, 23, 59, tzinfo=UTC)) == 0
    assert digest_due_send(now=datetime(2025, 3, 10, 0, 0, tzinfo=UTC)) == 1
    assert [m.to for m in mail.outbox] == [["tokyo@example.com"]]
    # New York moved to daylight saving time on 9 March: Monday 09:00 there is 13:00 UTC.
    assert digest_due_send(now=datetime(2025, 3, 10, 12, 59, tzinfo=UTC)) == 0
    assert digest_due_send(now=datetime(2025, 3, 10, 13, 0, tzinfo=UTC)) == 1
    assert [m.to for m in mail.outbox] == [["tokyo@example.com"], ["ny@example.com"]]
    # The rest of the week: nothing more.
    for hours in range(1, 24 * 7 - 13, 5):
        assert (
            digest_due_send(now=datetime(2025, 3, 10, 13, 0, tzinfo=UTC) + timedelta(hours=hours))
            == 0
        )
    assert len(mail.outbox) == 2

    rows = {s.user_id: s for s in DigestSubscription.objects.all()}
    assert rows[tokyo.pk].last_week_sent == date(2025, 3, 10)
    assert rows[tokyo.pk].last_sent_at == datetime(2025, 3, 10, 0, 0, tzinfo=UTC)
    assert rows[new_york.pk].last_week_sent == date(2025, 3, 10)


def test_the_week_is_the_subscribers_week_across_daylight_saving() -> None:
    subscription = DigestSubscription(weekday=0, hour=9, timezone="America/New_York")
    week = digest_week_due(subscription=subscription, now=datetime(2025, 3, 10, 13, 0, tzinfo=UTC))
    assert week is not None
    # 09:00 both Mondays, local time: 14:00 UTC before the change, 13:00 UTC after.
    assert week.start.astimezone(UTC) == datetime(2025, 3, 3, 14, 0, tzinfo=UTC)
    assert week.end.astimezone(UTC) == datetime(2025, 3, 10, 13, 0, tzinfo=UTC)
    assert week.monday == date(2025, 3, 10)
    # Sunday 23:00 in Tokyo is still Sunday 14:00 UTC: the week's Monday is the local one.
    tokyo = DigestSubscription(weekday=6, hour=23, timezone="Asia/Tokyo")
    week = digest_week_due(subscription=tokyo, now=datetime(2025, 3, 9, 14, 0, tzinfo=UTC))
    assert week is not None
    assert week.monday == date(2025, 3, 3)
    assert week.end == datetime(2025, 3, 9, 23, 0, tzinfo=ZoneInfo("Asia/Tokyo"))


def test_the_next_digest_is_this_weeks_until_it_is_sent() -> None:
    subscription = DigestSubscription(weekday=2, hour=18, timezone="Europe/Paris")
    monday = datetime(2025, 3, 10, 8, 0, tzinfo=UTC)
    assert digest_week_next(subscription=subscription, now=monday).end == datetime(
        2025, 3, 12, 18, 0, tzinfo=ZoneInfo("Europe/Paris")
    )
    subscription.last_week_sent = date(2025, 3, 10)
    thursday = datetime(2025, 3, 13, 8, 0, tzinfo=UTC)
    assert digest_week_next(subscription=subscription, now=thursday).end == datetime(
        2025, 3, 19, 18, 0, tzinfo=ZoneInfo("Europe/Paris")
    )


def test_one_digest_per_week_when_the_scheduler_fires_twice() -> None:
    user = UserFactory.create()
    subscribe(user, weekday=0, hour=9, timezone="UTC")
    assert digest_due_send(now=NOW) == 1
    assert digest_due_send(now=NOW) == 0
    assert digest_due_send(now=NOW + timedelta(minutes=15)) == 0
    assert digest_due_send(now=NOW + timedelta(days=6, hours=14)) == 0
    assert len(mail.outbox) == 1
    # Next Monday: next week's.
    assert digest_due_send(now=NOW + timedelta(days=7)) == 1
    assert len(mail.outbox) == 2


def test_a_late_run_sends_the_same_week() -> None:
    user = UserFactory.create()
    subscribe(user, weekday=0, hour=9, timezone="UTC")
    # The workers were down until Wednesday: the digest still covers Monday to Monday.
    digest_due_send(now=NOW + timedelta(days=2))
    (message,) = mail.outbox
    assert "Mon 03 Mar 2025 09:00 to Mon 10 Mar 2025 09:00 (UTC)" in message.body


def test_unsubscribed_and_inactive_users_get_nothing() -> None:
    subscribe(UserFactory.create(), enabled=False, weekday=0, hour=9, timezone="UTC")
    subscribe(UserFactory.create(is_active=False), weekday=0, hour=9, timezone="UTC")
    subscribe(UserFactory.create(email=""), weekday=0, hour=9, timezone="UTC")
    UserFactory.create()  # never subscribed
    assert digest_due_send(now=NOW) == 0
    assert mail.outbox == []
    assert set(DigestSubscription.objects.values_list("last_week_sent", flat=True)) == {None}


# Failed sends (a server down, a refused address) are in test_digest_smtp.py, against a real
# SMTP server.


def test_a_stored_zone_the_system_no_longer_knows_falls_back_to_utc() -> None:
    subscribe(UserFactory.create(), weekday=0, hour=9, timezone="Atlantis/Capital")
    assert digest_due_send(now=NOW) == 1


# --- Subscribing -----------------------------------------------------------------------------


def test_subscribing_after_this_weeks_moment_starts_next_week() -> None:
    user = UserFactory.create()
    wednesday = NOW + timedelta(days=2)
    digest_subscription_save(
        user=user, enabled=True, weekday=0, hour=9, timezone="UTC", now=wednesday
    )
    assert digest_due_send(now=wednesday) == 0
    assert digest_due_send(now=NOW + timedelta(days=7)) == 1


def test_subscribing_before_this_weeks_moment_sends_it() -> None:
    user = UserFactory.create()
    digest_subscription_save(
        user=user, enabled=True, weekday=4, hour=17, timezone="Europe/Paris", now=NOW
    )
    assert digest_due_send(now=datetime(2025, 3, 14, 15, 59, tzinfo=UTC)) == 0
    assert digest_due_send(now=datetime(2025, 3, 14, 16, 0, tzinfo=UTC)) == 1


def test_changing_the_hour_keeps_this_weeks_digest() -> None:
    user = UserFactory.create()
    digest_subscription_save(user=user, enabled=True, weekday=0, hour=10, timezone="UTC", now=NOW)
    # Moved to 08:00 at 09:05, before the 10:00 digest went out: it goes now.
    digest_subscription_save(user=user, enabled=True, weekday=0, hour=8, timezone="UTC", now=NOW)
    assert digest_due_send(now=NOW) == 1


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"timezone": "../../../etc/passwd"}, "timezone"),
        ({"timezone": "posix/Europe/Paris"}, "timezone"),
        ({"weekday": 7}, "weekday"),
        ({"hour": 24}, "hour"),
    ],
)
def test_invalid_schedules_are_refused(values: dict[str, Any], field: str) -> None:
    user = UserFactory.create()
    arguments: dict[str, Any] = {"enabled": True, "weekday": 0, "hour": 9, "timezone": "UTC"}
    with pytest.raises(ValidationError) as raised:
        digest_subscription_save(user=user, now=NOW, **(arguments | values))
    assert field in raised.value.message_dict
    assert not DigestSubscription.objects.exists()


def test_beat_runs_a_registered_task() -> None:
    from django.conf import settings

    from asm_console.celery import app
    from notifications.digest_tasks import send_due_digests

    entry = settings.CELERY_BEAT_SCHEDULE["send-weekly-digests"]
    assert entry["schedule"] == timedelta(minutes=15)
    # Workers import it at start (autodiscovery only finds tasks.py).
    app.loader.import_default_modules()
    assert entry["task"] in app.tasks
    assert send_due_digests.name == entry["task"]
    assert send_due_digests() == 0
