from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from accounts.models import APIKey, AuditEvent, Role
from tests.factories import UserFactory


@pytest.mark.django_db
def test_command_prints_key_alone_on_last_line_and_stores_only_its_hash() -> None:
    out, err = StringIO(), StringIO()
    call_command("create_api_key", name="checkout", scopes="intake,read", stdout=out, stderr=err)

    raw_key = out.getvalue().strip().splitlines()[-1]
    api_key = APIKey.objects.get()
    assert raw_key.startswith(f"asm_{api_key.prefix}_")
    assert api_key.key_hash == hashlib.sha256(raw_key.encode()).hexdigest()
    assert raw_key not in api_key.key_hash
    assert api_key.scopes == ["intake", "read"]
    assert api_key.name == "checkout"
    assert "not shown again" in err.getvalue()


@pytest.mark.django_db
def test_command_refuses_unknown_scope() -> None:
    with pytest.raises(CommandError, match="Unknown scopes: admin"):
        call_command("create_api_key", name="x", scopes="read,admin", stdout=StringIO())
    assert not APIKey.objects.exists()


@pytest.mark.django_db
def test_key_authenticates_and_records_last_use(client: Client, make_api_key) -> None:
    raw_key = make_api_key("read")
    response = client.get("/api/v1/me", HTTP_DD_API_KEY=raw_key)
    assert response.status_code == 200
    assert response.json() == {
        "kind": "api_key",
        "name": "test key",
        "role": None,
        "scopes": ["read"],
    }
    first_use = APIKey.objects.get().last_used_at
    assert first_use is not None

    # Within a minute, further requests do not write again.
    client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    assert APIKey.objects.get().last_used_at == first_use
    APIKey.objects.update(last_used_at=timezone.now() - timedelta(minutes=5))
    client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    last_use = APIKey.objects.get().last_used_at
    assert last_use is not None
    assert last_use > first_use


@pytest.mark.django_db
@pytest.mark.parametrize(
    "header",
    [
        {"HTTP_DD_API_KEY": "asm_deadbeef_not-a-real-secret"},
        {"HTTP_DD_API_KEY": "nonsense"},
        {"HTTP_AUTHORIZATION": "Bearer asm_"},
    ],
)
def test_wrong_key_is_refused_with_401(client: Client, make_api_key, header) -> None:
    make_api_key("read")
    response = client.get("/api/v1/services", **header)
    assert response.status_code == 401
    assert response.json()["error"] == {
        "code": "not_authenticated",
        "message": "The API key is not valid or was revoked.",
        "details": None,
    }
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.django_db
def test_key_with_right_prefix_but_wrong_secret_is_refused(client: Client, make_api_key) -> None:
    raw_key = make_api_key("read")
    forged = raw_key[:-4] + ("AAAA" if not raw_key.endswith("AAAA") else "BBBB")
    assert client.get("/api/v1/services", HTTP_DD_API_KEY=forged).status_code == 401


@pytest.mark.django_db
def test_admin_creates_key_in_ui_sees_it_once_and_revokes_it(client: Client) -> None:
    admin = UserFactory.create(role=Role.ADMIN)
    client.force_login(admin)

    response = client.post(
        "/settings/api-keys/", {"name": "web-store", "scopes": ["intake", "read"]}
    )
    assert response.status_code == 200
    api_key = APIKey.objects.get(name="web-store")
    raw_key = response.context["new_key"]["raw_key"]
    assert raw_key.encode() in response.content
    assert response["Cache-Control"].startswith("max-age=0")
    assert api_key.created_by == admin

    listing = client.get("/settings/api-keys/")
    assert raw_key.encode() not in listing.content
    assert f"asm_{api_key.prefix}_".encode() in listing.content
    assert Client().get("/api/v1/me", HTTP_DD_API_KEY=raw_key).status_code == 200

    client.post(f"/settings/api-keys/{api_key.pk}/revoke/")
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    assert api_key.revoked_by == admin
    assert Client().get("/api/v1/me", HTTP_DD_API_KEY=raw_key).status_code == 401
    assert list(AuditEvent.objects.values_list("action", flat=True)) == [
        AuditEvent.Action.API_KEY_REVOKED,
        AuditEvent.Action.API_KEY_CREATED,
    ]


@pytest.mark.django_db
def test_ui_form_errors_are_shown_not_500(client: Client) -> None:
    client.force_login(UserFactory.create(role=Role.ADMIN))
    response = client.post("/settings/api-keys/", {"name": "", "scopes": ["bogus"]})
    assert response.status_code == 400
    assert not APIKey.objects.exists()
    assert b"This field is required" in response.content


@pytest.mark.django_db
def test_api_create_list_and_revoke(client: Client) -> None:
    client.force_login(UserFactory.create(role=Role.ADMIN))
    created = client.post(
        "/api/v1/api-keys", json.dumps({"name": "sdk", "scopes": ["write"]}), "application/json"
    )
    assert created.status_code == 201
    body = created.json()
    assert body["api_key"]["prefix"] in body["key"]
    assert body["api_key"]["scopes"] == ["write"]

    listed = client.get("/api/v1/api-keys").json()
    assert [item["name"] for item in listed] == ["sdk"]
    assert "key" not in listed[0]
    assert "key_hash" not in listed[0]

    revoked = client.post(f"/api/v1/api-keys/{body['api_key']['id']}/revoke")
    assert revoked.json()["is_active"] is False
    assert client.get("/api/v1/me", HTTP_DD_API_KEY=body["key"]).status_code == 401


@pytest.mark.django_db
def test_api_rejects_bad_input_with_error_shape(client: Client) -> None:
    client.force_login(UserFactory.create(role=Role.ADMIN))
    response = client.post(
        "/api/v1/api-keys", json.dumps({"name": "x", "scopes": ["root"]}), "application/json"
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert "scopes" in error["details"]

    malformed = client.post("/api/v1/api-keys", "{not json", "application/json")
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "invalid"
    assert not APIKey.objects.exists()
