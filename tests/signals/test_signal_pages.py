"""The Signals pages: the list, a signal's page and its actions, the passlist and denylist
pages. Rows are made with the ORM as the evaluator would leave them."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.html import escape

from accounts.models import Role, User
from services.models import Service
from signals.models import DenylistEntry, PassFilter, Signal, SignalActivity, SignalRule
from signals.signal_rules import builtin_signal_rules
from tests.factories import ServiceFactory, UserFactory
from tests.signals.test_triage_support import ago, make_event
from tests.signals.test_triage_support import make_signal as make_one

pytestmark = pytest.mark.django_db

ClientFor = Callable[[User], Client]
HOSTILE = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


@pytest.fixture
def checkout(db: None) -> Service:
    return ServiceFactory.create(name="checkout", env="prod")


@pytest.fixture
def member(client_for: ClientFor, member_user: User) -> Client:
    return client_for(member_user)


@pytest.fixture
def viewer(client_for: ClientFor, viewer_user: User) -> Client:
    return client_for(viewer_user)


_groups = itertools.count(1)


def make_signal(service: Service | None = None, **fields: Any) -> Signal:
    """A signal with a group of its own, unless the test gives one."""
    fields.setdefault("group", {"service": getattr(service, "name", ""), "n": next(_groups)})
    return make_one(service, **fields)


def listed(client: Client, query: str = "") -> list[int]:
    response = client.get(f"/signals/{query}")
    assert response.status_code == 200
    return [signal.pk for signal in response.context["page"].object_list]


def activity(signal: Signal) -> list[tuple[str, str, str, str, str]]:
    return list(
        SignalActivity.objects.filter(signal=signal)
        .order_by("id")
        .values_list("kind", "actor_name", "from_value", "to_value", "message")
    )


def message_texts(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


# --- The list -------------------------------------------------------------------------------


def test_list_shows_live_signals_most_severe_first_then_most_recent(
    viewer: Client, checkout: Service
) -> None:
    low_recent = make_signal(checkout, severity="low", last_seen=ago(minutes=1))
    high_old = make_signal(checkout, severity="high", last_seen=ago(hours=5))
    high_recent = make_signal(
        checkout, severity="high", status="under_review", last_seen=ago(minutes=5)
    )
    critical = make_signal(checkout, severity="critical", last_seen=ago(days=2))
    archived = make_signal(
        checkout,
        severity="critical",
        status="archived",
        archive_reason="resolved",
        archived_at=timezone.now(),
    )

    assert listed(viewer) == [critical.pk, high_recent.pk, high_old.pk, low_recent.pk]
    assert listed(viewer, "?status=archived") == [archived.pk]
    assert listed(viewer, "?status=all")[:2] == [archived.pk, critical.pk]
    response = viewer.get("/signals/")
    content = response.content.decode()
    assert '<span class="severity critical">Critical</span>' in content
    assert f'href="/signals/{critical.pk}/"' in content


def test_list_filters(
    client_for: ClientFor, member_user: User, admin_user: User, checkout: Service
) -> None:
    ledger = ServiceFactory.create(name="ledger", env="prod")
    mine = make_signal(checkout, severity="medium", assignee=member_user)
    theirs = make_signal(checkout, severity="high", assignee=admin_user, rule_id="scanner")
    nobody = make_signal(ledger, severity="medium")
    client = client_for(member_user)

    assert listed(client, "?severity=medium") == [mine.pk, nobody.pk] or listed(
        client, "?severity=medium"
    ) == [nobody.pk, mine.pk]
    assert listed(client, f"?service={ledger.pk}") == [nobody.pk]
    assert listed(client, "?rule=scanner") == [theirs.pk]
    assert listed(client, "?assignee=mine") == [mine.pk]
    assert listed(client, "?assignee=none") == [nobody.pk]
    assert listed(client, f"?assignee={admin_user.pk}") == [theirs.pk]
    assert listed(client, f"?service={checkout.pk}&severity=high") == [theirs.pk]
    # What does not parse is ignored, not a 500.
    for query in ("?severity=urgent", "?service=abc", "?status=gone", "?page=x", "?page=999"):
        assert viewer_ok(client, query)
    # The filter form offers the services, rules and people that exist.
    choices = client.get("/signals/").context["choices"]
    assert [name for _, name, _ in choices.services] == ["checkout", "ledger"]
    assert {rule for rule, _ in choices.rules} == {"sqli-burst", "scanner"}
    assert {name for _, name in choices.assignees} == {"mel", "ada"}


def viewer_ok(client: Client, query: str) -> bool:
    return client.get(f"/signals/{query}").status_code == 200


def test_htmx_filter_answers_with_the_table_only(viewer: Client, checkout: Service) -> None:
    make_signal(checkout, severity="high")
    response = viewer.get("/signals/?severity=high", headers={"HX-Request": "true"})
    content = response.content.decode()
    assert response.status_code == 200
    assert content.lstrip().startswith('<div id="signal-table">')
    assert "<html" not in content
    assert "<html" in viewer.get("/signals/?severity=high").content.decode()


def test_list_paginates(viewer: Client, checkout: Service) -> None:
    for i in range(55):
        make_signal(checkout, group={"n": i}, last_seen=ago(minutes=i))
    assert len(listed(viewer)) == 50
    assert len(listed(viewer, "?page=2")) == 5
    assert 'href="?page=2"' in viewer.get("/signals/").content.decode()
    assert (
        'href="?severity=medium&amp;page=2"'
        in viewer.get("/signals/?severity=medium").content.decode()
    )


def test_list_queries_do_not_grow_with_the_rows_shown(
    client_for: ClientFor, member_user: User
) -> None:
    client = client_for(member_user)
    counts = []
    for n in (2, 30):
        Signal.objects.all().delete()
        for i in range(n):
            service = ServiceFactory.create(name=f"svc-{n}-{i}")
            make_signal(service, assignee=member_user, group={"n": i})
        with CaptureQueriesContext(connection) as queries:
            assert client.get("/signals/").status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_detail_queries_do_not_grow_with_traces_attackers_or_activity(
    client_for: ClientFor, member_user: User, checkout: Service
) -> None:
    client = client_for(member_user)
    counts: dict[str, list[int]] = {"overview": [], "traces": [], "activity": []}
    for n in (2, 25):
        events = [make_event(checkout, client_ip=f"203.0.113.{i + 1}") for i in range(n)]
        signal = make_signal(checkout, events=events, group={"n": n})
        for i in range(n):
            SignalActivity.objects.create(signal=signal, kind="commented", message=f"c{i}")
        for tab in counts:
            with CaptureQueriesContext(connection) as queries:
                assert client.get(f"/signals/{signal.pk}/?tab={tab}").status_code == 200
            counts[tab].append(len(queries))
    for tab, (few, many) in counts.items():
        assert few == many, tab


# --- A signal -------------------------------------------------------------------------------


def test_detail_shows_what_happened_attackers_routes_timeline_and_traces(
    viewer: Client, checkout: Service
) -> None:
    events = [make_event(checkout, detected_at=ago(hours=h)) for h in (3, 2, 2, 1)]
    events.append(make_event(checkout, client_ip="198.51.100.4", detected_at=ago(minutes=30)))
    signal = make_signal(
        checkout,
        events=events,
        severity="high",
        attackers={
            "ips": {
                "203.0.113.7": {
                    "count": 4,
                    "first_seen": ago(hours=3).isoformat(),
                    "last_seen": ago(hours=1).isoformat(),
                },
                "198.51.100.4": {"count": 1},
            },
            "users": {"alice": {"count": 2, "first_seen": "not a date"}},
        },
        routes={"/search": 4, "/login": 1},
    )

    response = viewer.get(f"/signals/{signal.pk}/")
    assert response.status_code == 200
    context = response.context
    assert [row.value for row in context["ips"]] == ["203.0.113.7", "198.51.100.4"]
    assert context["users"][0].value == "alice"
    assert context["users"][0].first_seen is None
    assert context["routes"] == [("/search", 4), ("/login", 1)]
    timeline = context["timeline"]
    assert timeline.total == 5
    assert sum(bar.count for bar in timeline.bars) == 5
    assert max(bar.height for bar in timeline.bars) == 96
    content = response.content.decode()
    assert '<svg class="timeline"' in content
    assert "SQL injection attempts" in content
    # Viewers read, and see no action form.
    assert "Assign to me" not in content
    assert "Add to passlist" not in content
    assert 'method="post"' not in content.split("</header>")[1]

    traces = viewer.get(f"/signals/{signal.pk}/?tab=traces")
    rows = traces.context["traces"]
    assert [row.trace_id for row in rows] == [event.trace_id for event in events]
    assert all(row.event is not None for row in rows)
    assert f'href="/suspicious-requests/traces/{events[0].trace_id}/"' in traces.content.decode()
    partial = viewer.get(f"/signals/{signal.pk}/?tab=traces", headers={"HX-Request": "true"})
    assert partial.content.decode().lstrip().startswith('<div id="signal-tab">')


def test_missing_signal_is_404(viewer: Client) -> None:
    assert viewer.get("/signals/999999/").status_code == 404
    assert viewer.get(f"/signals/{2**64}/").status_code == 404


def test_rule_description_and_next_steps_are_shown(viewer: Client, checkout: Service) -> None:
    shipped = builtin_signal_rules()["security-scanner"]
    signal = make_signal(checkout, rule_id="security-scanner")
    content = viewer.get(f"/signals/{signal.pk}/").content.decode()
    assert escape(shipped.description) in content
    assert escape(shipped.next_steps) in content

    custom = {
        **shipped.as_definition(),
        "id": "custom-scan",
        "description": "Someone scans <b>us</b>.",
        "next_steps": "Block the scanner.",
    }
    SignalRule.objects.create(
        rule_id="custom-scan", source=SignalRule.Source.CUSTOM, definition=custom
    )
    signal = make_signal(checkout, rule_id="custom-scan")
    content = viewer.get(f"/signals/{signal.pk}/").content.decode()
    assert "Someone scans &lt;b&gt;us&lt;/b&gt;." in content
    assert "Block the scanner." in content
    # A rule that no longer exists: the page still shows the signal.
    gone = make_signal(checkout, rule_id="deleted-rule")
    response = viewer.get(f"/signals/{gone.pk}/")
    assert response.status_code == 200
    assert response.context["rule_info"] is None


def test_viewer_gets_403_on_every_action(
    viewer: Client, viewer_user: User, checkout: Service
) -> None:
    signal = make_signal(checkout, events=[make_event(checkout)])
    entry = PassFilter.objects.create(service="checkout", reason="x")
    blocked = DenylistEntry.objects.create(kind="ip", value="203.0.113.9", reason="x")
    posts = {
        "/signals/bulk/": {"action": "assign_me", "ids": [signal.pk]},
        f"/signals/{signal.pk}/assign/": {"assignee": viewer_user.pk},
        f"/signals/{signal.pk}/status/": {"status": "under_review"},
        f"/signals/{signal.pk}/archive/": {"reason": "resolved"},
        f"/signals/{signal.pk}/reopen/": {},
        f"/signals/{signal.pk}/comment/": {"message": "hi"},
        f"/signals/{signal.pk}/passlist/": {"service": "checkout", "step": "preview"},
        f"/signals/{signal.pk}/block/": {"ips": ["203.0.113.7"], "reason": "x"},
        "/signals/passlist/": {"service": "checkout", "reason": "x", "step": "preview"},
        f"/signals/passlist/{entry.pk}/end/": {},
        "/signals/denylist/": {"kind": "ip", "value": "203.0.113.8", "reason": "x"},
        f"/signals/denylist/{blocked.pk}/remove/": {},
    }
    for url, data in posts.items():
        assert viewer.post(url, data).status_code == 403, url
    assert viewer.get(f"/signals/{signal.pk}/passlist/").status_code == 403
    assert viewer.get(f"/signals/{signal.pk}/block/").status_code == 403
    assert SignalActivity.objects.count() == 0
    assert PassFilter.objects.get().expires_at is None
    assert list(DenylistEntry.objects.values_list("value", flat=True)) == ["203.0.113.9"]
    # The lists are readable, without their forms.
    for url in ("/signals/passlist/", "/signals/denylist/"):
        response = viewer.get(url)
        assert response.status_code == 200
        assert 'method="post"' not in response.content.decode().split("</header>")[1]


def test_each_action_writes_its_activity_row(
    member: Client, member_user: User, admin_user: User, checkout: Service
) -> None:
    signal = make_signal(checkout)
    url = f"/signals/{signal.pk}"

    response = member.post(f"{url}/assign/", {"assignee": admin_user.pk}, follow=True)
    assert response.redirect_chain[-1][0] == f"{url}/?tab=activity"
    assert "Assigned to ada." in message_texts(response)
    member.post(f"{url}/status/", {"status": "under_review", "comment": "looking"})
    member.post(f"{url}/archive/", {"reason": "false_positive", "comment": "our scanner"})
    member.post(f"{url}/reopen/")
    member.post(f"{url}/comment/", {"message": "back again"})
    member.post(f"{url}/assign/", {"assignee": ""})

    assert activity(signal) == [
        ("assigned", "mel", "", "ada", ""),
        ("status_changed", "mel", "open", "under_review", "looking"),
        ("status_changed", "mel", "under_review", "archived:false_positive", "our scanner"),
        ("reopened", "mel", "archived:false_positive", "open", ""),
        ("commented", "mel", "", "", "back again"),
        ("assigned", "mel", "ada", "", ""),
    ]
    signal.refresh_from_db()
    assert (signal.status, signal.assignee) == ("open", None)
    page = member.get(f"{url}/?tab=activity").content.decode()
    assert "our scanner" in page
    assert "back again" in page


def test_refusals_are_messages_not_errors(
    member: Client, viewer_user: User, checkout: Service
) -> None:
    group = {"service": "checkout", "client_ip": "203.0.113.7"}
    signal = make_signal(
        checkout,
        group=group,
        status="archived",
        archive_reason="resolved",
        archived_at=timezone.now(),
    )
    make_signal(checkout, group=group)  # the same rule and group, live again
    url = f"/signals/{signal.pk}"

    response = member.post(f"{url}/reopen/", follow=True)
    assert response.status_code == 200
    assert any(
        "already open for the same rule and group" in text for text in message_texts(response)
    )

    response = member.post(f"{url}/archive/", {"reason": "bored"}, follow=True)
    assert response.status_code == 200
    assert any(text.startswith("reason:") for text in message_texts(response))

    # A viewer is not among the choices: the form refuses before the service would.
    response = member.post(f"{url}/assign/", {"assignee": viewer_user.pk}, follow=True)
    assert any(text.startswith("assignee:") for text in message_texts(response))

    response = member.post(f"{url}/comment/", {"message": "   "}, follow=True)
    assert response.status_code == 200
    assert any("message" in text for text in message_texts(response))
    assert activity(signal) == []
    assert member.post("/signals/999999/archive/", {"reason": "resolved"}).status_code == 404


def test_bulk_assign_to_me_and_archive(
    member: Client, member_user: User, checkout: Service
) -> None:
    first = make_signal(checkout, group={"n": 1})
    second = make_signal(checkout, group={"n": 2})
    untouched = make_signal(checkout, group={"n": 3})

    response = member.post(
        "/signals/bulk/",
        {"action": "assign_me", "ids": [first.pk, second.pk], "return_query": "severity=medium"},
        follow=True,
    )
    assert response.redirect_chain[-1][0] == "/signals/?severity=medium"
    assert "Assigned 2 signals to you." in message_texts(response)
    assert set(Signal.objects.filter(assignee=member_user).values_list("pk", flat=True)) == {
        first.pk,
        second.pk,
    }

    response = member.post(
        "/signals/bulk/", {"action": "archive", "ids": [first.pk, second.pk]}, follow=True
    )
    assert any("reason" in text for text in message_texts(response))
    response = member.post(
        "/signals/bulk/",
        {"action": "archive", "ids": [first.pk, second.pk], "reason": "resolved", "comment": "ok"},
        follow=True,
    )
    assert "Archived 2 signals as resolved." in message_texts(response)
    assert activity(first)[-1] == ("status_changed", "mel", "open", "archived:resolved", "ok")
    assert activity(untouched) == []
    assert listed(member) == [untouched.pk]

    response = member.post(
        "/signals/bulk/", {"action": "archive", "reason": "resolved"}, follow=True
    )
    assert "Choose at least one signal." in " ".join(message_texts(response))
    # The return query is read as filters: anything else in it is dropped.
    response = member.post(
        "/signals/bulk/",
        {"action": "assign_me", "ids": [untouched.pk], "return_query": "next=//evil.example"},
    )
    assert response["Location"] == "/signals/"


# --- Passlist -------------------------------------------------------------------------------


def test_add_to_passlist_from_a_signal_previews_then_saves(
    member: Client, checkout: Service
) -> None:
    events = [make_event(checkout, detected_at=ago(hours=h)) for h in (1, 2, 3)]
    make_event(checkout, detected_at=ago(days=9))  # outside the 7 days
    signal = make_signal(checkout, events=events)
    url = f"/signals/{signal.pk}/passlist/"

    form = member.get(url).context["form"]
    assert form.initial["service"] == "checkout"
    assert form.initial["rule_id"] == "crs-942-100"
    assert form.initial["ip"] == "203.0.113.7"
    scopes = {name: value for name, value in form.initial.items() if value}

    preview = member.post(url, {**scopes, "reason": "Our own scanner.", "step": "preview"})
    assert preview.status_code == 200
    impact = preview.context["impact"]
    assert (impact.security_events, impact.signals) == (3, 1)
    content = preview.content.decode()
    assert re.search(r'<strong class="impact-events">3</strong> security events', content)
    assert re.search(r'<strong class="impact-signals">1</strong> signal\b', content)
    assert "Save to passlist" in content
    assert PassFilter.objects.count() == 0
    previewed = preview.context["form"]["previewed"].value()

    # Saving scopes other than those previewed shows their preview first.
    changed = member.post(
        url,
        {**scopes, "ip": "", "reason": "Our own scanner.", "previewed": previewed, "step": "save"},
    )
    assert changed.status_code == 200
    assert changed.context["impact"] is not None
    assert PassFilter.objects.count() == 0

    saved = member.post(
        url,
        {
            **scopes,
            "reason": "Our own scanner.",
            "expires_in": "30d",
            "previewed": previewed,
            "step": "save",
        },
        follow=True,
    )
    entry = PassFilter.objects.get()
    assert (entry.service, entry.rule_id, entry.ip, entry.signal) == (
        "checkout",
        "crs-942-100",
        "203.0.113.7",
        signal,
    )
    assert entry.expires_at is not None
    assert timedelta(days=29) < entry.expires_at - timezone.now() <= timedelta(days=30)
    assert saved.redirect_chain[-1][0] == f"/signals/{signal.pk}/?tab=activity"
    assert activity(signal)[0][:2] == ("passlisted", "mel")


def test_passlist_form_errors_are_shown_on_the_form(member: Client, checkout: Service) -> None:
    signal = make_signal(checkout)
    url = f"/signals/{signal.pk}/passlist/"
    response = member.post(url, {"ip": "not an ip", "step": "preview"})
    assert response.status_code == 400
    assert "Expected an IP address" in response.content.decode()
    response = member.post(url, {"step": "preview"})
    assert response.status_code == 400
    assert "Set at least one scope" in response.content.decode()
    # No reason: the preview works, the save says why not.
    preview = member.post(url, {"service": "checkout", "step": "preview"})
    assert preview.status_code == 200
    previewed = preview.context["form"]["previewed"].value()
    response = member.post(url, {"service": "checkout", "previewed": previewed, "step": "save"})
    assert response.status_code == 400
    assert "Say why" in response.content.decode()
    assert PassFilter.objects.count() == 0


def test_passlist_page_lists_adds_and_ends(
    member: Client, member_user: User, checkout: Service
) -> None:
    make_event(checkout, route="/health", detected_at=ago(hours=1))
    preview = member.post(
        "/signals/passlist/", {"route": "/health*", "reason": "Probes", "step": "preview"}
    )
    assert preview.context["impact"].security_events == 1
    previewed = preview.context["form"]["previewed"].value()
    member.post(
        "/signals/passlist/",
        {"route": "/health*", "reason": "Probes", "previewed": previewed, "step": "save"},
    )
    entry = PassFilter.objects.get()
    assert (entry.route, entry.created_by, entry.signal) == ("/health*", member_user, None)

    content = member.get("/signals/passlist/").content.decode()
    assert "/health*" in content
    assert "Probes" in content
    assert "mel" in content

    member.post(f"/signals/passlist/{entry.pk}/end/")
    entry.refresh_from_db()
    assert entry.expires_at is not None
    assert entry.expires_at <= timezone.now()
    assert list(member.get("/signals/passlist/").context["entries"]) == []
    assert list(member.get("/signals/passlist/?ended=1").context["entries"]) == [entry]
    assert member.post("/signals/passlist/999999/end/").status_code == 404


# --- Denylist -------------------------------------------------------------------------------


def test_block_from_a_signal_creates_denylist_entries(
    member: Client, member_user: User, checkout: Service
) -> None:
    events = [
        make_event(checkout, client_ip="203.0.113.7"),
        make_event(checkout, client_ip="198.51.100.4"),
    ]
    signal = make_signal(
        checkout,
        events=events,
        attackers={
            "ips": {"203.0.113.7": {"count": 1}, "198.51.100.4": {"count": 1}},
            "users": {"mallory": {"count": 1}},
        },
    )
    url = f"/signals/{signal.pk}/block/"
    form = member.get(url).context["form"]
    assert {value for value, _ in form.fields["ips"].choices} == {"203.0.113.7", "198.51.100.4"}

    response = member.post(
        url,
        {"ips": ["203.0.113.7"], "users": ["mallory"], "expires_in": "1d", "reason": "Scanner"},
        follow=True,
    )
    assert response.redirect_chain[-1][0] == f"/signals/{signal.pk}/?tab=activity"
    assert "Blocked 203.0.113.7, mallory." in message_texts(response)
    entries = {(e.kind, e.value): e for e in DenylistEntry.objects.all()}
    assert set(entries) == {("ip", "203.0.113.7"), ("user", "mallory")}
    ip_entry = entries[("ip", "203.0.113.7")]
    assert (ip_entry.signal, ip_entry.created_by, ip_entry.reason) == (
        signal,
        member_user,
        "Scanner",
    )
    assert ip_entry.expires_at is not None
    assert [row[0] for row in activity(signal)] == ["blocked", "blocked"]

    # Only the signal's attackers are offered, and a choice is needed.
    response = member.post(url, {"ips": ["192.0.2.1"], "reason": "x"})
    assert response.status_code == 400
    response = member.post(url, {"reason": "x"})
    assert response.status_code == 400
    assert "Choose at least one IP or user" in response.content.decode()
    assert DenylistEntry.objects.count() == 2


def test_denylist_page_adds_by_hand_and_removes(member: Client, member_user: User) -> None:
    response = member.post(
        "/signals/denylist/",
        {"kind": "ip", "value": "203.0.113.0/24", "expires_in": "7d", "reason": "Botnet"},
        follow=True,
    )
    assert "Blocked 203.0.113.0/24." in message_texts(response)
    entry = DenylistEntry.objects.get()
    assert (entry.kind, entry.value, entry.created_by) == ("ip", "203.0.113.0/24", member_user)
    content = member.get("/signals/denylist/").content.decode()
    assert "203.0.113.0/24" in content
    assert "Botnet" in content

    refused = member.post("/signals/denylist/", {"kind": "ip", "value": "127.0.0.1", "reason": "x"})
    assert refused.status_code == 400
    assert "Loopback" in refused.content.decode()
    refused = member.post(
        "/signals/denylist/", {"kind": "ip", "value": "10.0.0.0/4", "reason": "x"}
    )
    assert "wider than /8" in refused.content.decode()

    member.post(f"/signals/denylist/{entry.pk}/remove/")
    assert DenylistEntry.objects.count() == 0
    assert member.post(f"/signals/denylist/{entry.pk}/remove/").status_code == 404


def test_expired_denylist_entries_are_shown_on_request(member: Client) -> None:
    entry = DenylistEntry.objects.create(kind="user", value="bob", reason="x")
    DenylistEntry.objects.filter(pk=entry.pk).update(expires_at=ago(hours=1))
    assert list(member.get("/signals/denylist/").context["entries"]) == []
    assert list(member.get("/signals/denylist/?expired=1").context["entries"]) == [entry]


# --- Hostile values -------------------------------------------------------------------------


def test_attacker_controlled_values_are_escaped_everywhere(
    member: Client, member_user: User
) -> None:
    service = ServiceFactory.create(name=HOSTILE, env=HOSTILE[:90])
    event = make_event(service, route=HOSTILE, user=HOSTILE, rule_name=HOSTILE, env=HOSTILE[:90])
    signal = make_signal(
        service,
        events=[event],
        rule_name=HOSTILE,
        title=f"Attack from {HOSTILE}",
        env=HOSTILE[:90],
        attackers={"ips": {"203.0.113.7": {"count": 1}}, "users": {HOSTILE: {"count": 1}}},
        routes={HOSTILE: 1},
    )
    SignalActivity.objects.create(
        signal=signal, kind="commented", actor_name=HOSTILE, message=HOSTILE
    )
    PassFilter.objects.create(user=HOSTILE, reason=HOSTILE, signal=signal)
    DenylistEntry.objects.create(kind="user", value=HOSTILE, reason=HOSTILE, signal=signal)

    pages = [
        "/signals/",
        "/signals/?status=all",
        f"/signals/{signal.pk}/",
        f"/signals/{signal.pk}/?tab=traces",
        f"/signals/{signal.pk}/?tab=activity",
        f"/signals/{signal.pk}/passlist/",
        f"/signals/{signal.pk}/block/",
        "/signals/passlist/",
        "/signals/denylist/",
    ]
    for url in pages:
        for headers in ({}, {"HX-Request": "true"}):
            response = member.get(url, headers=headers)
            assert response.status_code == 200, url
            content = response.content.decode()
            assert "<script>alert(1)" not in content, url
            assert "onerror=alert(2)>" not in content, url
    assert ESCAPED in member.get("/signals/").content.decode()
    assert ESCAPED in member.get(f"/signals/{signal.pk}/").content.decode()
    preview = member.post(
        f"/signals/{signal.pk}/passlist/", {"user": HOSTILE, "reason": HOSTILE, "step": "preview"}
    )
    assert preview.status_code in (200, 400)
    assert "<script>alert(1)" not in preview.content.decode()


def test_signal_links_use_ids(viewer: Client) -> None:
    service = ServiceFactory.create(name="a/../../admin?x=")
    signal = make_signal(service, rule_id="../../x", title="t")
    content = viewer.get("/signals/").content.decode()
    assert f'href="/signals/{signal.pk}/"' in content
    assert "../../admin" not in re.findall(r'href="([^"]*)"', content).__str__()


def test_unknown_roles_cannot_read(client: Client, checkout: Service) -> None:
    signal = make_signal(checkout)
    inactive = UserFactory.create(role=Role.MEMBER, is_active=False)
    client.force_login(inactive)
    assert client.get(f"/signals/{signal.pk}/").status_code in (302, 403)
