from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import Role
from tests.factories import PASSWORD, UserFactory


def login(client: Client, username: str, password: str, ip: str = "203.0.113.7"):
    return client.post(
        "/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=ip
    )


@pytest.mark.django_db
def test_login_page_signs_in_and_logout_signs_out(client: Client) -> None:
    UserFactory.create(username="grace", role=Role.MEMBER)
    response = login(client, "grace", PASSWORD)
    assert response.status_code == 302
    assert response["Location"] == "/services/"
    assert client.get("/services/").status_code == 200

    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/services/").status_code == 302


@pytest.mark.django_db
def test_wrong_password_is_refused_without_saying_why(client: Client) -> None:
    UserFactory.create(username="grace")
    wrong_password = login(client, "grace", "not the password")
    no_such_user = login(client, "nobody", "not the password")
    assert wrong_password.status_code == no_such_user.status_code == 200
    assert wrong_password.context["form"].errors == no_such_user.context["form"].errors
    assert client.get("/services/").status_code == 302


@pytest.mark.django_db
@pytest.mark.parametrize("username", ["grace", "no-such-account"])
def test_repeated_failures_lock_out_existing_and_unknown_accounts_alike(
    client: Client, settings, username: str
) -> None:
    UserFactory.create(username="grace")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert login(client, username, "wrong").status_code == 200
    locked = login(client, username, "wrong")
    assert locked.status_code == 429
    assert b"Too many failed sign-in attempts" in locked.content
    assert username.encode() not in locked.content

    # While locked out, even the right password is refused, from another address too.
    assert login(client, "grace", PASSWORD, ip="198.51.100.1").status_code == (
        429 if username == "grace" else 302
    )


@pytest.mark.django_db
def test_one_address_is_locked_out_across_usernames(client: Client, settings) -> None:
    UserFactory.create(username="grace")
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        login(client, f"guess{attempt}", "wrong", ip="192.0.2.9")
    assert login(client, "grace", PASSWORD, ip="192.0.2.9").status_code == 429
    assert login(client, "grace", PASSWORD, ip="192.0.2.10").status_code == 302


@pytest.mark.django_db
def test_password_change(client: Client) -> None:
    user = UserFactory.create(username="grace", role=Role.VIEWER)
    client.force_login(user)
    new_password = "a much longer passphrase 42"
    response = client.post(
        "/accounts/password_change/",
        {"old_password": PASSWORD, "new_password1": new_password, "new_password2": new_password},
    )
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.check_password(new_password)


@pytest.mark.django_db
def test_createsuperuser_makes_an_admin() -> None:
    from django.core.management import call_command

    from accounts.models import User

    call_command("createsuperuser", username="root", email="r@example.com", interactive=False)
    assert User.objects.get(username="root").role == Role.ADMIN
