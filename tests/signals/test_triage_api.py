"""REST API of triage, passlist and denylist: permissions, validation, error shape, storage."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from accounts.models import User
from services.models import Service
from signals.models import DenylistEntry, PassFilter, Signal, SignalActivity
from tests.factories import ServiceFactory
from tests.signals.test_triage_support import make_event, make_signal

pytestmark = pytest.mark.django_db

ClientFor = Callable[[User], Client]


def post(client: Client, url: str, body: Any = None, **extra: Any) -> Any:
    return client.post(url, json.dumps(body or {}), "application/json", **extra)


def assert_error(response: Any, status: int, code: str, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == code
    for word in words:
        assert word in error["message"]
    return error


@pytest.fixture
def checkout(db: None) -> Service:
    return ServiceFactory.create(name="checkout", env="prod")


@pytest.fixture
def member(client_for: ClientFor, member_user: User) -> Client:
    return client_for(member_user)


# --- Reading ----------------------------------------------------------------------------------


def test_list_filters_and_paginates(
    client_for: ClientFor, viewer_user: User, member_user: User, checkout: Service
) -> None:
    high = make_signal(checkout, severity="high")
    make_signal(
        checkout,
        severity="low",
        status="under_review",
        assignee=member_user,
        group={"service": "checkout", "client_ip": "192.0.2.1"},
    )
    other = make_signal(ServiceFactory.create(name="catalog"), rule_id="scanner", env="staging")
    viewer = client_for(viewer_user)

    def ids(query: str) -> list[int]:
        response = viewer.get(f"/api/v1/signals?{query}")
        assert response.status_code == 200, response.content
        return [row["id"] for row in response.json()["results"]]

    page = viewer.get("/api/v1/signals?limit=2").json()
    assert page["count"] == 3
    assert len(page["results"]) == 2
    assert ids("severity=high,critical") == [high.pk]
    assert len(ids("status=open")) == 2
    assert ids("service=catalog") == [other.pk]
    assert ids("env=staging") == [other.pk]
    assert ids("rule=scanner") == [other.pk]
    assert len(ids("assignee=mel")) == 1
    row = viewer.get("/api/v1/signals?severity=high").json()["results"][0]
    assert set(row) >= {
        "id",
        "rule_id",
        "title",
        "severity",
        "status",
        "archive_reason",
        "assignee",
        "service",
        "env",
        "attackers",
        "routes",
        "first_seen",
        "last_seen",
        "event_count",
    }
    assert (row["service"], row["assignee"]) == ("checkout", None)
    error = assert_error(viewer.get("/api/v1/signals?status=closed"), 400, "invalid", "status")
    assert "status" in error["details"]
    assert_error(viewer.get("/api/v1/signals?severity=urgent"), 400, "invalid", "severity")


def test_detail_has_activity_and_traces(
    client_for: ClientFor, viewer_user: User, member: Client, checkout: Service
) -> None:
    event = make_event(checkout)
    signal = make_signal(checkout, events=[event])
    post(member, f"/api/v1/signals/{signal.pk}/comments", {"message": "On it."})
    detail = client_for(viewer_user).get(f"/api/v1/signals/{signal.pk}").json()
    assert detail["traces"] == [{"trace_id": event.trace_id, "span_id": event.span_id}]
    assert [(a["kind"], a["actor"], a["message"]) for a in detail["activity"]] == [
        ("commented", "mel", "On it.")
    ]
    assert detail["group"] == signal.group


@pytest.mark.parametrize("pk", ["999", "99999999999999999999999"])
def test_missing_ids_are_404(member: Client, pk: str) -> None:
    assert_error(member.get(f"/api/v1/signals/{pk}"), 404, "not_found")
    assert_error(post(member, f"/api/v1/signals/{pk}/reopen"), 404, "not_found")
    assert_error(member.delete(f"/api/v1/passlist/{pk}"), 404, "not_found")
    assert_error(member.delete(f"/api/v1/denylist/{pk}"), 404, "not_found")


# --- Permissions ------------------------------------------------------------------------------

ACTIONS = [
    ("signals/{pk}/assign", {"assignee": None}),
    ("signals/{pk}/status", {"status": "under_review"}),
    ("signals/{pk}/archive", {"reason": "resolved"}),
    ("signals/{pk}/reopen", {}),
    ("signals/{pk}/comments", {"message": "hi"}),
    ("signals/bulk", {"ids": ["{pk}"], "action": "reopen"}),
    ("signals/{pk}/block", {"reason": "x"}),
    ("passlist", {"service": "checkout", "reason": "x"}),
    ("denylist", {"kind": "ip", "value": "203.0.113.7", "reason": "x"}),
]


def _fill(url: str, body: dict[str, Any], pk: int) -> tuple[str, dict[str, Any]]:
    text = json.dumps(body).replace('"{pk}"', str(pk))
    return "/api/v1/" + url.format(pk=pk), json.loads(text)


@pytest.mark.parametrize(("url", "body"), ACTIONS)
def test_viewers_and_read_keys_cannot_act(
    client_for: ClientFor,
    viewer_user: User,
    make_api_key: Callable[..., str],
    url: str,
    body: dict[str, Any],
) -> None:
    signal = make_signal(attackers={"ips": {"203.0.113.7": {"count": 1}}})
    path, data = _fill(url, body, signal.pk)
    assert_error(post(client_for(viewer_user), path, data), 403, "permission_denied")
    read_key = make_api_key("read")
    assert_error(post(Client(), path, data, HTTP_DD_API_KEY=read_key), 403, "permission_denied")
    assert_error(post(Client(), path, data), 401, "not_authenticated")
    assert SignalActivity.objects.count() == 0
    assert PassFilter.objects.count() == DenylistEntry.objects.count() == 0


def test_deletes_need_write(
    client_for: ClientFor, viewer_user: User, make_api_key: Callable[..., str]
) -> None:
    entry = PassFilter.objects.create(service="checkout", reason="x")
    blocked = DenylistEntry.objects.create(kind="ip", value="203.0.113.7", reason="x")
    viewer = client_for(viewer_user)
    assert_error(viewer.delete(f"/api/v1/passlist/{entry.pk}"), 403, "permission_denied")
    assert_error(viewer.delete(f"/api/v1/denylist/{blocked.pk}"), 403, "permission_denied")
    read_key = make_api_key("read")
    response = Client().delete(f"/api/v1/denylist/{blocked.pk}", HTTP_DD_API_KEY=read_key)
    assert_error(response, 403, "permission_denied")
    write_key = make_api_key("write")
    response = Client().delete(f"/api/v1/denylist/{blocked.pk}", HTTP_DD_API_KEY=write_key)
    assert response.status_code == 204
    assert not DenylistEntry.objects.exists()


def test_read_keys_read_and_write_keys_act(make_api_key: Callable[..., str]) -> None:
    signal = make_signal()
    for path in ("signals", f"signals/{signal.pk}", "passlist", "denylist"):
        response = Client().get(f"/api/v1/{path}", HTTP_DD_API_KEY=make_api_key("read"))
        assert response.status_code == 200, (path, response.content)
    intake_key = make_api_key("intake")
    response = Client().get("/api/v1/signals", HTTP_DD_API_KEY=intake_key)
    assert_error(response, 403, "permission_denied")
    write_key = make_api_key("write")
    response = post(
        Client(),
        f"/api/v1/signals/{signal.pk}/archive",
        {"reason": "accepted_risk"},
        HTTP_DD_API_KEY=write_key,
    )
    assert response.status_code == 200, response.content
    row = SignalActivity.objects.get()
    # An API key acts for no person: the row names no one.
    assert (row.actor, row.actor_name, row.to_value) == (None, "", "archived:accepted_risk")


# --- Triage actions ---------------------------------------------------------------------------


def test_assign_status_archive_reopen_comment(
    member: Client, member_user: User, checkout: Service
) -> None:
    signal = make_signal(checkout)
    base = f"/api/v1/signals/{signal.pk}"
    assigned = post(member, f"{base}/assign", {"assignee": "mel"})
    assert assigned.status_code == 200, assigned.content
    assert assigned.json()["signal"]["assignee"] == "mel"
    assert assigned.json()["activity"]["to_value"] == "mel"
    again = post(member, f"{base}/assign", {"assignee": "mel"})
    assert again.json()["activity"] is None

    reviewed = post(member, f"{base}/status", {"status": "under_review", "comment": "Checking."})
    assert reviewed.json()["signal"]["status"] == "under_review"
    archived = post(member, f"{base}/archive", {"reason": "false_positive"})
    assert archived.json()["signal"]["archive_reason"] == "false_positive"
    reopened = post(member, f"{base}/reopen")
    assert reopened.json()["activity"]["kind"] == "reopened"
    commented = post(member, f"{base}/comments", {"message": "Back again."})
    assert commented.status_code == 201
    assert [
        (a.kind, a.actor, a.from_value, a.to_value, a.message)
        for a in SignalActivity.objects.order_by("id")
    ] == [
        ("assigned", member_user, "", "mel", ""),
        ("status_changed", member_user, "open", "under_review", "Checking."),
        ("status_changed", member_user, "under_review", "archived:false_positive", ""),
        ("reopened", member_user, "archived:false_positive", "open", ""),
        ("commented", member_user, "", "", "Back again."),
    ]


@pytest.mark.parametrize(
    ("action", "body", "field"),
    [
        ("assign", {"assignee": "nobody"}, "assignee"),
        ("assign", {}, "assignee"),
        ("assign", {"assignee": "vic"}, "assignee"),
        ("status", {"status": "archived"}, "reason"),
        ("status", {"status": "closed"}, "status"),
        ("status", {"status": "open", "reason": "resolved"}, "reason"),
        ("archive", {"reason": "meh"}, "reason"),
        ("archive", {}, "reason"),
        ("comments", {"message": ""}, "message"),
        ("comments", {"message": "   "}, "message"),
        ("comments", [1, 2], "non_field_errors"),
    ],
)
def test_bad_input_names_the_field(
    member: Client, viewer_user: User, action: str, body: Any, field: str
) -> None:
    signal = make_signal()
    response = member.post(
        f"/api/v1/signals/{signal.pk}/{action}", json.dumps(body), "application/json"
    )
    error = assert_error(response, 400, "invalid", field)
    assert field in error["details"]
    assert SignalActivity.objects.count() == 0


def test_malformed_json_is_a_400(member: Client) -> None:
    signal = make_signal()
    response = member.post(f"/api/v1/signals/{signal.pk}/comments", "{", "application/json")
    assert_error(response, 400, "invalid")


def test_reopen_conflict_is_a_409(member: Client, member_user: User) -> None:
    old = make_signal(status="archived", archive_reason="resolved", archived_at=timezone.now())
    live = make_signal(old.service, group=old.group, group_key=old.group_key)
    error = assert_error(post(member, f"/api/v1/signals/{old.pk}/reopen"), 409, "conflict")
    assert error["details"] == {"signal_ids": [live.pk]}
    assert str(live.pk) in error["message"]


def test_bulk(member: Client, admin_user: User) -> None:
    signals = [make_signal() for _ in range(3)]
    ids = [s.pk for s in signals]
    archived = post(
        member,
        "/api/v1/signals/bulk",
        {"ids": ids, "action": "archive", "reason": "false_positive", "comment": "Noise."},
    )
    assert archived.status_code == 200, archived.content
    assert archived.json() == {"action": "archive", "changed": ids, "unchanged": []}
    assert set(Signal.objects.values_list("archive_reason", flat=True)) == {"false_positive"}
    assigned = post(
        member, "/api/v1/signals/bulk", {"ids": ids[:2], "action": "assign", "assignee": "ada"}
    )
    assert assigned.json()["changed"] == ids[:2]
    reopened = post(member, "/api/v1/signals/bulk", {"ids": ids[:1], "action": "reopen"})
    assert reopened.json()["changed"] == ids[:1]
    commented = post(
        member, "/api/v1/signals/bulk", {"ids": ids, "action": "comment", "message": "Reviewed."}
    )
    assert commented.json()["changed"] == ids
    status = post(member, "/api/v1/signals/bulk", {"ids": ids, "action": "status"})
    assert_error(status, 400, "invalid", "status")
    assert SignalActivity.objects.count() == 3 + 2 + 1 + 3


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ids": [], "action": "reopen"}, "ids"),
        ({"ids": ["x"], "action": "reopen"}, "ids"),
        ({"ids": [424242], "action": "reopen"}, "ids"),
        ({"ids": [1], "action": "delete"}, "action"),
        ({"ids": [1], "action": "archive"}, "reason"),
        ({"ids": [1], "action": "comment"}, "message"),
        ({"ids": list(range(1, 502)), "action": "reopen"}, "ids"),
    ],
)
def test_bulk_input(member: Client, body: dict[str, Any], field: str) -> None:
    make_signal()
    assert_error(post(member, "/api/v1/signals/bulk", body), 400, "invalid", field)


# --- Passlist ---------------------------------------------------------------------------------


def test_passlist_from_a_signal(member: Client, member_user: User, checkout: Service) -> None:
    events = [make_event(checkout, client_ip="192.0.2.7") for _ in range(2)]
    signal = make_signal(checkout, events=events)
    suggestion = member.get(f"/api/v1/signals/{signal.pk}/passlist-suggestion").json()
    assert suggestion["scopes"]["ip"] == "192.0.2.7"
    assert suggestion["scopes"]["rule_id"] == "crs-942-100"
    assert suggestion["events_examined"] == 2
    assert suggestion["impact"]["security_events"] == 2
    assert suggestion["impact"]["signal_ids"] == [signal.pk]

    preview = post(member, "/api/v1/passlist/impact", {"ip": "192.0.2.0/24"})
    assert preview.status_code == 200, preview.content
    assert (preview.json()["security_events"], preview.json()["signals"]) == (2, 1)

    expires = (timezone.now() + timedelta(days=30)).isoformat()
    created = post(
        member,
        "/api/v1/passlist",
        {
            **suggestion["scopes"],
            "reason": "Internal scanner.",
            "expires_at": expires,
            "signal": signal.pk,
        },
    )
    assert created.status_code == 201, created.content
    entry = PassFilter.objects.get()
    assert (entry.ip, entry.signal, entry.created_by) == ("192.0.2.7", signal, member_user)
    assert created.json()["active"] is True
    assert SignalActivity.objects.get(signal=signal).kind == "passlisted"

    listed = member.get("/api/v1/passlist").json()
    assert [row["id"] for row in listed["results"]] == [entry.pk]
    assert member.delete(f"/api/v1/passlist/{entry.pk}").status_code == 204
    assert member.get("/api/v1/passlist").json()["count"] == 0
    ended = member.get("/api/v1/passlist?include_ended=true").json()["results"]
    assert [(row["id"], row["active"]) for row in ended] == [(entry.pk, False)]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"reason": "x"}, "scopes"),
        ({"service": "checkout"}, "reason"),
        ({"ip": "300.1.1.1", "reason": "x"}, "ip"),
        ({"route": "*", "reason": "x"}, "route"),
        ({"service": "c", "reason": "x", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"service": "c", "reason": "x", "expires_at": "tomorrow"}, "expires_at"),
        ({"service": "c", "reason": "x", "signal": 424242}, "signal"),
        ({"service": None, "reason": "x"}, "service"),
    ],
)
def test_passlist_input(member: Client, body: dict[str, Any], field: str) -> None:
    error = assert_error(post(member, "/api/v1/passlist", body), 400, "invalid", field)
    assert field in error["details"]
    assert not PassFilter.objects.exists()


def test_impact_is_open_to_viewers_and_validated(client_for: ClientFor, viewer_user: User) -> None:
    viewer = client_for(viewer_user)
    assert post(viewer, "/api/v1/passlist/impact", {"env": "prod"}).status_code == 200
    assert_error(post(viewer, "/api/v1/passlist/impact", {}), 400, "invalid", "scopes")
    assert_error(post(viewer, "/api/v1/passlist/impact", {"ip": "x"}), 400, "invalid", "ip")


# --- Denylist ---------------------------------------------------------------------------------


def test_denylist_add_update_list_remove(member: Client, member_user: User) -> None:
    body = {"kind": "ip", "value": "198.51.100.7/24", "reason": "Stuffing."}
    created = post(member, "/api/v1/denylist", body)
    assert created.status_code == 201, created.content
    assert created.json()["value"] == "198.51.100.0/24"
    later = (timezone.now() + timedelta(days=2)).isoformat()
    updated = post(member, "/api/v1/denylist", {**body, "reason": "Again.", "expires_at": later})
    assert updated.status_code == 200
    assert updated.json()["id"] == created.json()["id"]
    assert updated.json()["reason"] == "Again."
    post(member, "/api/v1/denylist", {"kind": "user", "value": "u-42", "reason": "Fraud."})
    assert member.get("/api/v1/denylist").json()["count"] == 2
    users = member.get("/api/v1/denylist?kind=user").json()["results"]
    assert [row["value"] for row in users] == ["u-42"]
    assert_error(member.get("/api/v1/denylist?kind=host"), 400, "invalid", "kind")
    assert_error(member.get("/api/v1/denylist?include_expired=maybe"), 400, "invalid")
    assert member.delete(f"/api/v1/denylist/{created.json()['id']}").status_code == 204
    assert member.get("/api/v1/denylist").json()["count"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "ip", "value": "localhost", "reason": "x"}, "value"),
        ({"kind": "ip", "value": "127.0.0.1", "reason": "x"}, "value"),
        ({"kind": "ip", "value": "0.0.0.0/0", "reason": "x"}, "value"),
        ({"kind": "mac", "value": "x", "reason": "x"}, "kind"),
        ({"kind": "user", "value": "u", "reason": ""}, "reason"),
        (
            {"kind": "user", "value": "u", "reason": "x", "expires_at": "2001-01-01T00:00:00Z"},
            "expires_at",
        ),
    ],
)
def test_denylist_input(member: Client, body: dict[str, Any], field: str) -> None:
    assert_error(post(member, "/api/v1/denylist", body), 400, "invalid", field)
    assert not DenylistEntry.objects.exists()


def test_block_from_a_signal(member: Client, member_user: User) -> None:
    signal = make_signal(
        attackers={"ips": {"203.0.113.7": {"count": 9}, "198.51.100.1": {"count": 1}}}
    )
    url = f"/api/v1/signals/{signal.pk}/block"
    chosen = post(member, url, {"ips": ["203.0.113.7"], "reason": "Scanner."})
    assert chosen.status_code == 201, chosen.content
    assert [e["value"] for e in chosen.json()["entries"]] == ["203.0.113.7"]
    everyone = post(member, url, {"reason": "All of them."})
    assert sorted(e["value"] for e in everyone.json()["entries"]) == [
        "198.51.100.1",
        "203.0.113.7",
    ]
    assert DenylistEntry.objects.count() == 2
    assert SignalActivity.objects.filter(signal=signal, kind="blocked").count() == 3
    assert_error(post(member, url, {"ips": ["192.0.2.1"], "reason": "x"}), 400, "invalid", "ips")
    assert_error(post(member, url, {"ips": "203.0.113.7", "reason": "x"}), 400, "invalid", "ips")


# --- Schema -----------------------------------------------------------------------------------


def test_schema_documents_every_route(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("spectacular", "--fail-on-warn", "--validate", "--format", "openapi-json")
    paths = json.loads(capsys.readouterr().out)["paths"]
    for path, methods in {
        "/api/v1/signals": {"get"},
        "/api/v1/signals/{id}": {"get"},
        "/api/v1/signals/{id}/assign": {"post"},
        "/api/v1/signals/{id}/status": {"post"},
        "/api/v1/signals/{id}/archive": {"post"},
        "/api/v1/signals/{id}/reopen": {"post"},
        "/api/v1/signals/{id}/comments": {"post"},
        "/api/v1/signals/{id}/passlist-suggestion": {"get"},
        "/api/v1/signals/{id}/block": {"post"},
        "/api/v1/signals/bulk": {"post"},
        "/api/v1/passlist": {"get", "post"},
        "/api/v1/passlist/{id}": {"delete"},
        "/api/v1/passlist/impact": {"post"},
        "/api/v1/denylist": {"get", "post"},
        "/api/v1/denylist/{id}": {"delete"},
    }.items():
        assert methods <= set(paths[path]), path
    listed = paths["/api/v1/signals"]["get"]["responses"]["200"]["content"]["application/json"]
    assert listed["schema"]["$ref"].endswith("PaginatedSignalOutputList")
    archive = paths["/api/v1/signals/{id}/archive"]["post"]["requestBody"]["content"]
    assert "examples" in archive["application/json"]
