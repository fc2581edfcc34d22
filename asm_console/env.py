"""Strict parsing of settings from the environment.

Every helper names the variable in its error, so a bad value stops start-up with a message
an operator can act on instead of a traceback from deep inside Django.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Mapping
from email.utils import parseaddr
from pathlib import Path
from typing import Any, overload

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingError(ImproperlyConfigured):
    """A setting from the environment is missing or malformed."""

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        super().__init__(f"{name}: {problem}")


class Env:
    """Reads typed values from a mapping (``os.environ`` unless given)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ

    def is_set(self, name: str) -> bool:
        return self.environ.get(name, "").strip() != ""

    @overload
    def string(self, name: str) -> str | None: ...
    @overload
    def string(self, name: str, default: str) -> str: ...
    def string(self, name: str, default: str | None = None) -> str | None:
        value = self.environ.get(name, "").strip()
        return value if value else default

    def required_str(self, name: str, why: str) -> str:
        value = self.string(name)
        if value is None:
            raise SettingError(name, f"is required {why}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.string(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise SettingError(name, f"expected true or false, got {value!r}")

    def integer(
        self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        value = self.string(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise SettingError(name, f"expected a whole number, got {value!r}") from None
        if minimum is not None and number < minimum:
            raise SettingError(name, f"must be at least {minimum}, got {number}")
        if maximum is not None and number > maximum:
            raise SettingError(name, f"must be at most {maximum}, got {number}")
        return number

    def items(self, name: str, default: list[str]) -> list[str]:
        value = self.string(name)
        if value is None:
            return list(default)
        return [item.strip() for item in value.split(",") if item.strip()]

    def networks(
        self, name: str, default: list[str]
    ) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """Comma-separated addresses and CIDR networks; `none` for the empty list."""
        items = self.items(name, default)
        if [item.lower() for item in items] == ["none"]:
            return []
        networks = []
        for item in items:
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise SettingError(name, f"{item!r} is not an IP address or CIDR network") from None
        return networks

    def database(self, name: str, default: str) -> dict[str, Any]:
        url = self.string(name, default)
        if "://" not in url:
            raise SettingError(
                name, "expected a URL such as postgres://user:password@host:5432/dbname"
            )
        try:
            config = dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True)
        except (ValueError, dj_database_url.UnknownSchemeError) as exc:
            raise SettingError(name, f"cannot be parsed: {exc}") from None
        engine = config.get("ENGINE", "")
        if engine not in ("django.db.backends.postgresql", "django.db.backends.sqlite3"):
            raise SettingError(name, "only postgres:// and sqlite:// databases are supported")
        if not config.get("NAME"):
            raise SettingError(name, "names no database")
        return dict(config)

    def broker_url(self, name: str, default: str) -> str:
        url = self.string(name, default)
        scheme = url.split("://", 1)[0] if "://" in url else ""
        if scheme not in ("redis", "rediss", "filesystem"):
            raise SettingError(
                name, "expected a redis:// or rediss:// URL (unset it for the embedded broker)"
            )
        return url

    def email(self, name: str, default: str) -> str:
        value = self.string(name, default)
        _, address = parseaddr(value)
        local, _, domain = address.rpartition("@")
        if not local or not domain or " " in address:
            raise SettingError(name, f"expected an email address, got {value!r}")
        return value


def secret_key_file(path: Path) -> str:
    """Return the secret kept at ``path``, creating it (mode 0600) on first use."""
    if path.exists():
        key = path.read_text().strip()
        if len(key) >= 50:
            return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(64)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key
