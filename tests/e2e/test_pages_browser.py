"""The catalog, the explorer and the trace page in a real browser, on traffic replayed from real
ddtrace captures: sorting the catalog, opening the Enable ASM instructions, filtering the
explorer, and opening a trace with its attack flow and security section."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from django.test import Client
from django.utils import timezone
from playwright.sync_api import BrowserContext, Page, expect
from pytest_django.live_server_helper import LiveServer

from accounts.models import User
from services.models import Service
from tests.factories import ServiceFactory, UserFactory
from tests.traces.replay import process_pending, send
from traces.models import SecurityEvent

if TYPE_CHECKING:
    from tests.e2e.conftest import ConsoleLog

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SignIn = Callable[[BrowserContext, User], None]
NewContext = Callable[..., BrowserContext]


@pytest.fixture
def traffic(transactional_db: None) -> dict[str, Service]:
    """The real captures' attacks on web-store, made recent, beside a quiet service without
    ASM."""
    client = Client()
    for name in ("v04_03_sqli_xss_path_traversal", "v04_05_xff_public_private_nikto"):
        assert send(client, name).status_code == 200
    process_pending()
    # Replayed captures are dated when they were made.
    SecurityEvent.objects.update(detected_at=timezone.now())
    quiet = ServiceFactory.create(
        name="aaa-quiet", env="prod", asm_enabled=False, language="java", tracer_version=""
    )
    return {"web": Service.objects.get(name="web-store"), "quiet": quiet}


def signed_in_page(new_context: NewContext, sign_in: SignIn, console_log: ConsoleLog) -> Page:
    context = new_context()
    sign_in(context, UserFactory.create())
    page = context.new_page()
    console_log.watch(page)
    page.on("dialog", lambda dialog: console_log.errors.append(f"dialog: {dialog.message}"))
    return page


def test_sort_the_catalog_and_open_the_enable_asm_instructions(
    traffic: dict[str, Service],
    new_context: NewContext,
    sign_in: SignIn,
    console_log: ConsoleLog,
    live_server: LiveServer,
) -> None:
    page = signed_in_page(new_context, sign_in, console_log)
    page.goto("/services/")
    names = page.locator("#service-table tbody th[scope=row]")
    # The most attacked first.
    expect(names.first).to_contain_text("web-store")

    page.evaluate("window.e2eSamePage = true")
    # A column sorts highest first on the first click, as the default sort does; a second
    # click reverses it.
    with page.expect_response(lambda response: "sort=-name" in response.url) as swap:
        page.get_by_role("link", name=re.compile(r"^Service")).click()
    assert swap.value.request.headers.get("hx-request") == "true"
    expect(page).to_have_url(re.compile(r"sort=-name"))
    expect(names.first).to_contain_text("web-store")
    with page.expect_response(lambda response: "sort=name" in response.url):
        page.get_by_role("link", name=re.compile(r"^Service")).click()
    expect(page).to_have_url(re.compile(r"sort=name"))
    expect(names.first).to_contain_text("aaa-quiet")
    # Sorted without a reload.
    assert page.evaluate("window.e2eSamePage") is True

    page.get_by_role("link", name="Enable ASM").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Enable ASM on aaa-quiet")
    # The service's own language (its tracer says java) is open; the others are one click away.
    java = page.locator("details.language[open]")
    expect(java).to_have_count(1)
    expect(java).to_contain_text("Java")
    expect(java).to_contain_text("-Ddd.appsec.enabled=true")
    page.get_by_text("Node.js", exact=True).click()
    expect(page.locator("details.language[open]")).to_have_count(2)
    expect(page.get_by_text("node --require dd-trace/init app.js")).to_be_visible()
    assert console_log.errors == []


def test_filter_the_explorer_and_open_a_trace(
    traffic: dict[str, Service],
    new_context: NewContext,
    sign_in: SignIn,
    console_log: ConsoleLog,
    live_server: LiveServer,
) -> None:
    page = signed_in_page(new_context, sign_in, console_log)
    page.goto("/suspicious-requests/")
    rows = page.locator("#request-table tbody tr")
    requests = SecurityEvent.objects.values("trace_id", "span_id").distinct().count()
    expect(rows).to_have_count(requests)

    page.evaluate("window.e2eSamePage = true")
    with page.expect_response(lambda response: "rule_type=xss" in response.url) as swap:
        page.get_by_label("Category").select_option("xss")
    assert swap.value.request.headers.get("hx-request") == "true"
    xss = SecurityEvent.objects.filter(rule_type="xss").values("span_id").distinct().count()
    expect(rows).to_have_count(xss)
    expect(page).to_have_url(re.compile(r"rule_type=xss"))
    assert page.evaluate("window.e2eSamePage") is True

    rows.first.get_by_role("link", name=re.compile(r"^trace ")).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Trace")
    flow = page.get_by_role("img", name=re.compile("web-store"))
    expect(flow).to_be_visible()
    expect(page.locator("svg.attack-flow g.flow-node.attacked.entry")).to_have_count(1)
    security = page.get_by_role("region", name="Security")
    expect(security).to_contain_text("xss")
    expect(security.locator("mark").first).to_be_visible()
    expect(page.locator("table.waterfall tbody tr").first).to_contain_text("web-store")
    assert console_log.errors == []


def test_a_bad_filter_says_why_in_place(
    traffic: dict[str, Service],
    new_context: NewContext,
    sign_in: SignIn,
    console_log: ConsoleLog,
    live_server: LiveServer,
) -> None:
    """The 400 a bad filter gets is shown where the table was (htmx swaps 4xx answers too)."""
    page = signed_in_page(new_context, sign_in, console_log)
    page.goto("/suspicious-requests/")
    with page.expect_response(lambda response: response.status == 400):
        page.get_by_label("Client IP").fill("not-an-ip")
        page.get_by_label("Client IP").press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("client IP: not an IP address")
    # The browser logs the 400 itself; nothing else went wrong.
    assert [e for e in console_log.errors if "400" not in e] == []
