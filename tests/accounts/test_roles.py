"""Each role against each kind of page and API: what it may do, and what it is refused."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from accounts.models import APIKey, Role
from tests.factories import ServiceFactory, UserFactory

READ_PAGES = [
    "/services/",
    "/services/vulnerabilities/",
    "/suspicious-requests/",
    "/signals/",
    "/signals/rules/",
    "/notifications/",
    "/settings/",
    "/accounts/password_change/",
    "/api/docs/",
]
ADMIN_PAGES = ["/settings/api-keys/", "/settings/users/"]
ALL_ROLES = [Role.VIEWER, Role.MEMBER, Role.ADMIN]


def signed_in(role: Role) -> Client:
    client = Client()
    client.force_login(UserFactory.create(role=role))
    return client


@pytest.mark.django_db
@pytest.mark.parametrize("path", READ_PAGES + ADMIN_PAGES)
def test_anonymous_is_sent_to_login(client: Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={path}"


@pytest.mark.django_db
@pytest.mark.parametrize("role", ALL_ROLES)
@pytest.mark.parametrize("path", READ_PAGES)
def test_every_role_reads_pages(role: Role, path: str) -> None:
    assert signed_in(role).get(path).status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("path", ADMIN_PAGES)
@pytest.mark.parametrize(
    ("role", "status"), [(Role.VIEWER, 403), (Role.MEMBER, 403), (Role.ADMIN, 200)]
)
def test_admin_pages_need_admin(role: Role, status: int, path: str) -> None:
    assert signed_in(role).get(path).status_code == status


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("role", "allowed"), [(Role.VIEWER, False), (Role.MEMBER, False), (Role.ADMIN, True)]
)
def test_admin_actions_need_admin(role: Role, allowed: bool) -> None:
    client = signed_in(role)
    target = UserFactory.create(role=Role.VIEWER)

    create = client.post("/settings/api-keys/", {"name": "ci", "scopes": ["intake"]})
    promote = client.post(f"/settings/users/{target.pk}/", {"role": "member"})

    target.refresh_from_db()
    if allowed:
        assert create.status_code == 200
        assert APIKey.objects.filter(name="ci").exists()
        assert promote.status_code == 302
        assert target.role == Role.MEMBER
    else:
        assert (create.status_code, promote.status_code) == (403, 403)
        assert not APIKey.objects.exists()
        assert target.role == Role.VIEWER


@pytest.mark.django_db
def test_deactivated_user_loses_access() -> None:
    user = UserFactory.create(role=Role.ADMIN)
    client = Client()
    client.force_login(user)
    user.is_active = False
    user.save()
    assert client.get("/services/").status_code == 302


# --- REST API ----------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/v1/me", "/api/v1/services", "/api/schema/"])
def test_api_read_by_every_role_and_not_anonymous(client: Client, path: str) -> None:
    anonymous = client.get(path)
    assert anonymous.status_code == 401
    assert json.loads(anonymous.content)["error"]["code"] == "not_authenticated"
    for role in ALL_ROLES:
        assert signed_in(role).get(path).status_code == 200, role


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("role", "status"), [(Role.VIEWER, 403), (Role.MEMBER, 200), (Role.ADMIN, 200)]
)
def test_api_triage_write_needs_member(role: Role, status: int) -> None:
    service = ServiceFactory.create(team="")
    response = signed_in(role).patch(
        f"/api/v1/services/{service.pk}", json.dumps({"team": "payments"}), "application/json"
    )
    assert response.status_code == status
    service.refresh_from_db()
    assert service.team == ("payments" if status == 200 else "")
    if status == 403:
        assert response.json()["error"]["code"] == "permission_denied"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("role", "status"), [(Role.VIEWER, 403), (Role.MEMBER, 403), (Role.ADMIN, 201)]
)
def test_api_admin_endpoints_need_admin(role: Role, status: int) -> None:
    client = signed_in(role)
    listed = client.get("/api/v1/api-keys")
    created = client.post("/api/v1/api-keys", {"name": "n", "scopes": ["read"]}, "application/json")
    assert created.status_code == status
    assert listed.status_code == (200 if role == Role.ADMIN else 403)
    assert APIKey.objects.exists() == (role == Role.ADMIN)


@pytest.mark.django_db
def test_api_keys_are_held_to_their_scopes(client: Client, make_api_key) -> None:
    service = ServiceFactory.create(team="")
    reader = make_api_key("read")
    writer = make_api_key("read", "write")
    intake = make_api_key("intake")
    body = json.dumps({"team": "edge"})

    assert client.get("/api/v1/services", HTTP_DD_API_KEY=reader).status_code == 200
    assert client.get("/api/v1/services", HTTP_AUTHORIZATION=f"Bearer {reader}").status_code == 200
    refused = client.get("/api/v1/services", HTTP_DD_API_KEY=intake)
    assert refused.status_code == 403
    assert "read" in refused.json()["error"]["message"]

    url = f"/api/v1/services/{service.pk}"
    assert client.patch(url, body, "application/json", HTTP_DD_API_KEY=reader).status_code == 403
    service.refresh_from_db()
    assert service.team == ""
    assert client.patch(url, body, "application/json", HTTP_DD_API_KEY=writer).status_code == 200
    service.refresh_from_db()
    assert service.team == "edge"

    # Keys never manage keys, whatever their scopes.
    for key in (reader, writer, intake):
        assert client.get("/api/v1/api-keys", HTTP_DD_API_KEY=key).status_code == 403


# --- Every view declares who may use it ------------------------------------------


def _patterns(resolver: URLResolver, prefix: str = "") -> list[tuple[str, URLPattern]]:
    found = []
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            found += _patterns(entry, prefix + str(entry.pattern))
        else:
            found.append((prefix + str(entry.pattern), entry))
    return found


def test_every_view_declares_a_role_or_opts_out_of_login() -> None:
    undeclared = []
    for route, pattern in _patterns(get_resolver()):
        view = pattern.callback
        cls = getattr(view, "cls", None)
        if cls is not None:  # REST view: RolePermission reads these, a missing one denies
            declared = any(
                getattr(cls, attr, None) is not None
                for attr in ("read_role", "write_role", "read_scope", "write_scope")
            )
        else:
            declared = getattr(view, "required_role", None) is not None or not getattr(
                view, "login_required", True
            )
        if not declared:
            undeclared.append(route)
    assert undeclared == []
