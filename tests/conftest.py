from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client

from accounts.models import Role, User
from accounts.services import api_key_create
from tests.factories import UserFactory


@pytest.fixture
def admin_user(db: None) -> User:
    return UserFactory(username="ada", role=Role.ADMIN)


@pytest.fixture
def member_user(db: None) -> User:
    return UserFactory(username="mel", role=Role.MEMBER)


@pytest.fixture
def viewer_user(db: None) -> User:
    return UserFactory(username="vic", role=Role.VIEWER)


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
