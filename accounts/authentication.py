"""API-key authentication for REST clients and tracers."""

from __future__ import annotations

from django.http import HttpRequest
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from accounts.models import APIKey
from accounts.selectors import api_key_from_raw
from accounts.services import api_key_touch


class APIKeyPrincipal:
    """``request.user`` for a request made with an API key: the key itself, not a person."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_superuser = False
    pk = None

    def __init__(self, api_key: APIKey) -> None:
        self.api_key = api_key
        self.username = f"api-key:{api_key.prefix}"

    def get_username(self) -> str:
        return self.username

    def __str__(self) -> str:
        return self.username


def raw_api_key(request: HttpRequest | Request) -> str | None:
    """The key sent as ``DD-API-KEY: <key>`` or ``Authorization: Bearer <key>``, if any."""
    header = request.META.get("HTTP_DD_API_KEY", "").strip()
    if header:
        return header
    scheme, _, credentials = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


class APIKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[APIKeyPrincipal, APIKey] | None:
        raw = raw_api_key(request)
        if raw is None:
            return None
        api_key = api_key_from_raw(raw)
        if api_key is None:
            raise exceptions.AuthenticationFailed("The API key is not valid or was revoked.")
        api_key_touch(api_key=api_key)
        return APIKeyPrincipal(api_key), api_key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="ASM Console"'
