"""The Signals pages in a real browser: filtering the list, archiving a signal, adding a
passlist entry from a signal (through its impact preview), blocking an attacker IP."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from playwright.sync_api import BrowserContext, Page, expect
from pytest_django.live_server_helper import LiveServer

from accounts.models import Role, User
from services.models import Service
from signals.models import DenylistEntry, PassFilter, Signal, SignalActivity
from tests.factories import ServiceFactory, UserFactory
from tests.signals.test_triage_support import ago, make_event, make_signal

if TYPE_CHECKING:
    from tests.e2e.conftest import ConsoleLog

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SignIn = Callable[[BrowserContext, User], None]
Screenshot = Callable[[Page, str], None]
NewContext = Callable[..., BrowserContext]
HOSTILE = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


@pytest.fixture
def member(transactional_db: None) -> User:
    return UserFactory.create(username="mel", role=Role.MEMBER)


@pytest.fixture
def checkout(transactional_db: None) -> Service:
    return ServiceFactory.create(name="checkout", env="prod")


def attack(service: Service, *, severity: str = "high", n: int = 3, **fields: Any) -> Signal:
    events = [
        make_event(service, client_ip="203.0.113.7", detected_at=ago(hours=hour + 1))
        for hour in range(n)
    ]
    return make_signal(
        service,
        events=events,
        severity=severity,
        routes={"/search": n},
        attackers={
            "ips": {
                "203.0.113.7": {
                    "count": n,
                    "first_seen": ago(hours=n).isoformat(),
                    "last_seen": ago(hours=1).isoformat(),
                }
            },
            "users": {},
        },
        **fields,
    )


def snap(screenshot: Screenshot, page: Page, name: str) -> None:
    """Screenshot the page's URL in a page of its own, which no console log watches: the
    <style> Playwright injects to hide the text caret is refused by the page's CSP, and that
    report, the screenshot's own, would fail the checks that the page itself has none."""
    other = page.context.new_page()
    other.goto(page.url)
    other.wait_for_load_state("networkidle")
    screenshot(other, name)
    other.close()


def open_signed_in(
    new_context: NewContext, sign_in: SignIn, user: User, console_log: ConsoleLog, **options: object
) -> Page:
    context = new_context(**options)
    sign_in(context, user)
    page = context.new_page()
    console_log.watch(page)
    # A dialog would mean an attacker's script ran: the log's emptiness is checked.
    page.on("dialog", lambda dialog: console_log.errors.append(f"dialog: {dialog.message}"))
    return page


def test_filter_the_list_and_archive_a_signal(
    member: User,
    checkout: Service,
    new_context: NewContext,
    sign_in: SignIn,
    console_log: ConsoleLog,
    live_server: LiveServer,
    screenshot: Screenshot,
) -> None:
    signal = attack(checkout, severity="high")
    attack(
        checkout,
        severity="low",
        group={"service": "checkout", "client_ip": "198.51.100.4"},
        title=f"Scanner {HOSTILE}",
    )
    ledger = ServiceFactory.create(name="ledger", env="prod")
    attack(ledger, severity="critical", title="Exploit on ledger")
    page = open_signed_in(new_context, sign_in, member, console_log)

    page.goto("/signals/")
    rows = page.locator("#signal-table tbody tr")
    expect(rows).to_have_count(3)
    # The most severe first; the hostile title shows as text.
    expect(rows.nth(0)).to_contain_text("Critical")
    expect(rows.nth(2)).to_contain_text(f"Scanner {HOSTILE}")
    snap(screenshot, page, "asm-signals")

    page.evaluate("window.e2eSamePage = true")
    with page.expect_response(lambda response: "severity=high" in response.url) as swap:
        page.get_by_label("Severity").select_option("high")
    assert swap.value.request.headers.get("hx-request") == "true"
    expect(rows).to_have_count(1)
    expect(page).to_have_url(
        re.compile(rf"^{re.escape(live_server.url)}/signals/\?.*severity=high")
    )
    assert page.evaluate("window.e2eSamePage") is True

    page.get_by_role("link", name=signal.title).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(signal.title)
    expect(page.locator("svg.timeline rect.events")).to_have_count(30)
    expect(page.get_by_role("region", name="Attacker IPs")).to_contain_text("203.0.113.7")
    snap(screenshot, page, "asm-signal-detail")

    archive = page.get_by_role("region", name="Archive")
    archive.get_by_label("Reason").select_option("false_positive")
    archive.get_by_label("Comment").fill("Our own load test.")
    archive.get_by_role("button", name="Archive").click()

    expect(
        page.get_by_role("status").filter(has_text="Archived as false positive.")
    ).to_be_visible()
    expect(page.get_by_role("region", name="Activity")).to_contain_text("Our own load test.")
    expect(page.get_by_role("button", name="Reopen")).to_be_visible()
    signal.refresh_from_db()
    assert (signal.status, signal.archive_reason) == ("archived", "false_positive")
    row = SignalActivity.objects.get(signal=signal)
    assert (row.kind, row.actor, row.to_value) == (
        "status_changed",
        member,
        "archived:false_positive",
    )

    page.goto("/signals/")
    expect(rows).to_have_count(2)
    page.wait_for_load_state("networkidle")
    assert console_log.errors == []


def test_add_a_passlist_entry_from_a_signal_after_its_preview(
    member: User,
    checkout: Service,
    new_context: NewContext,
    sign_in: SignIn,
    console_log: ConsoleLog,
    screenshot: Screenshot,
) -> None:
    signal = attack(checkout, n=4)
    page = open_signed_in(new_context, sign_in, member, console_log)

    page.goto(f"/signals/{signal.pk}/")
    page.get_by_role("link", name="Add to passlist").click()
    expect(page.get_by_role("heading", name="Add to passlist", level=1)).to_be_visible()
    # Prefilled with what the signal's events share.
    expect(page.get_by_label("Service")).to_have_value("checkout")
    expect(page.get_by_label("Detection rule id")).to_have_value("crs-942-100")
    expect(page.get_by_label("IP or network")).to_have_value("203.0.113.7")
    expect(page.get_by_role("button", name="Save to passlist")).to_have_count(0)

    page.get_by_label("Reason").fill("Our own scanner, run nightly.")
    page.get_by_role("button", name="Preview impact").click()

    impact = page.get_by_role("status").filter(has_text="Impact over the last 7 days")
    expect(impact).to_contain_text("would have excluded 4 security events")
    expect(impact).to_contain_text("silenced 1 signal")
    assert PassFilter.objects.count() == 0

    page.get_by_role("button", name="Save to passlist").click()

    expect(page.get_by_role("status").filter(has_text="Added passlist entry")).to_be_visible()
    expect(page.get_by_role("region", name="Activity")).to_contain_text("added to the passlist")
    entry = PassFilter.objects.get()
    assert (entry.service, entry.ip, entry.signal_id) == ("checkout", "203.0.113.7", signal.pk)

    page.get_by_role("navigation", name="Signals").get_by_role("link", name="Passlist").click()
    expect(page.get_by_role("table")).to_contain_text("Our own scanner, run nightly.")
    snap(screenshot, page, "asm-passlist")
    page.wait_for_load_state("networkidle")
    assert console_log.errors == []


def test_block_an_attacker_ip_from_a_signal(
    member: User,
    checkout: Service,
    new_context: NewContext,
    sign_in: SignIn,
    console_log: ConsoleLog,
    screenshot: Screenshot,
) -> None:
    signal = attack(checkout)
    page = open_signed_in(new_context, sign_in, member, console_log)

    page.goto(f"/signals/{signal.pk}/")
    page.get_by_role("link", name="Block attackers").click()
    page.get_by_label("203.0.113.7").check()
    page.get_by_label("Expires").select_option("1d")
    page.get_by_label("Reason").fill("Scanning the checkout.")
    page.get_by_role("button", name="Block").click()

    expect(page.get_by_role("status").filter(has_text="Blocked 203.0.113.7.")).to_be_visible()
    expect(page.get_by_role("region", name="Activity")).to_contain_text("attacker blocked")
    entry = DenylistEntry.objects.get()
    assert (entry.kind, entry.value, entry.signal_id) == ("ip", "203.0.113.7", signal.pk)
    assert entry.expires_at is not None

    page.get_by_role("navigation", name="Signals").get_by_role("link", name="Denylist").click()
    expect(page.get_by_role("row", name=re.compile("203.0.113.7"))).to_contain_text(
        "Scanning the checkout."
    )
    snap(screenshot, page, "asm-denylist")
    page.wait_for_load_state("networkidle")
    assert console_log.errors == []


def test_signal_pages_read_without_javascript(
    member: User, checkout: Service, new_context: NewContext, sign_in: SignIn
) -> None:
    signal = attack(checkout)
    context = new_context(java_script_enabled=False)
    sign_in(context, member)
    page = context.new_page()

    page.goto("/signals/")
    page.get_by_label("Severity").select_option("low")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("heading", name="No signal matches these filters")).to_be_visible()

    page.goto(f"/signals/{signal.pk}/")
    page.get_by_role("link", name="Traces (3)").click()
    expect(page.get_by_role("region", name="Linked traces").locator("tbody tr")).to_have_count(3)
