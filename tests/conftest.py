from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client

from accounts.models import Role, User
from accounts.services import api_key_create
from tests.factories import UserFactory


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:
    # PBKDF2 at production strength costs ~0.3 s per hash; tests create many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def admin_user(db: None) -> User:
    return UserFactory.create(username="ada", role=Role.ADMIN)


@pytest.fixture
def member_user(db: None) -> User:
    return UserFactory.create(username="mel", role=Role.MEMBER)


@pytest.fixture
def viewer_user(db: None) -> User:
    return UserFactory.create(username="vic", role=Role.VIEWER)


@pytest.fixture
def client_for(db: None) -> Callable[[User], Client]:
    """A test client signed in as the given user."""

    def make(user: User) -> Client:
        client = Client()
        client.force_login(user)
        return client

    return make


@pytest.fixture
def make_api_key(db: None) -> Callable[..., str]:
    """Create an API key with the given scopes and return the raw key."""

    def make(*scopes: str, name: str = "test key") -> str:
        _, raw_key = api_key_create(name=name, scopes=list(scopes), created_by=None)
        return raw_key

    return make


def pytest_configure(config: pytest.Config) -> None:
    from django.conf import settings

    from asm_console.celery import app

    if settings.CELERY_BROKER_URL == "filesystem://":
        # The embedded broker's queue lives in ASM_DATA_DIR, which a running `manage.py serve`
        # shares: tests use an in-process queue instead, so that they never feed that worker.
        app.conf.update(
            dict.fromkeys(("broker_url", "broker_read_url", "broker_write_url"), "memory://")
        )
        app.conf.broker_transport_options = {}
