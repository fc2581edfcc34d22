from __future__ import annotations

import stat
from pathlib import Path

import pytest

from asm_console.env import Env, SettingError, secret_key_file


def test_unset_and_blank_values_take_the_default() -> None:
    env = Env({"BLANK": "  "})
    assert env.string("MISSING", "d") == "d"
    assert env.string("BLANK") is None
    assert env.boolean("BLANK", True) is True
    assert env.integer("MISSING", 7) == 7
    assert env.items("MISSING", ["a"]) == ["a"]


@pytest.mark.parametrize(
    ("raw", "value"), [("true", True), ("ON", True), ("0", False), ("no", False)]
)
def test_booleans(raw: str, value: bool) -> None:
    assert Env({"DEBUG": raw}).boolean("DEBUG", not value) is value


@pytest.mark.parametrize(
    ("environ", "call", "message"),
    [
        ({"DEBUG": "maybe"}, lambda e: e.boolean("DEBUG", False), "DEBUG: expected true or false"),
        ({"PORT": "80x"}, lambda e: e.integer("PORT", 1), "PORT: expected a whole number"),
        ({"PORT": "0"}, lambda e: e.integer("PORT", 1, minimum=1), "PORT: must be at least 1"),
        (
            {"DATABASE_URL": "nonsense"},
            lambda e: e.database("DATABASE_URL", ""),
            "DATABASE_URL: expected a URL",
        ),
        (
            {"DATABASE_URL": "mysql://u@h/db"},
            lambda e: e.database("DATABASE_URL", ""),
            "DATABASE_URL: only postgres",
        ),
        (
            {"DATABASE_URL": "foo://x/y"},
            lambda e: e.database("DATABASE_URL", ""),
            "DATABASE_URL: cannot be parsed",
        ),
        (
            {"DATABASE_URL": "postgres://h:5432/"},
            lambda e: e.database("DATABASE_URL", ""),
            "DATABASE_URL: names no database",
        ),
        (
            {"CELERY_BROKER_URL": "amqp://x"},
            lambda e: e.broker_url("CELERY_BROKER_URL", ""),
            "CELERY_BROKER_URL: expected a redis",
        ),
        (
            {"FROM": "not an address"},
            lambda e: e.email("FROM", ""),
            "FROM: expected an email address",
        ),
        (
            {"NETS": "10.0.0.0/8,bogus"},
            lambda e: e.networks("NETS", []),
            "NETS: 'bogus' is not an IP",
        ),
    ],
)
def test_bad_values_name_the_variable(environ, call, message: str) -> None:
    with pytest.raises(SettingError) as excinfo:
        call(Env(environ))
    assert str(excinfo.value).startswith(message)


def test_good_values_parse() -> None:
    env = Env(
        {
            "DATABASE_URL": "postgres://asm:pw@db:5432/asm",
            "HOSTS": "a.example.com, b.example.com,,",
            "FROM": "ASM Console <asm@example.com>",
            "NETS": "127.0.0.0/8, 10.1.2.3",
        }
    )
    db = env.database("DATABASE_URL", "")
    assert (db["ENGINE"], db["HOST"], db["NAME"], db["USER"]) == (
        "django.db.backends.postgresql",
        "db",
        "asm",
        "asm",
    )
    assert env.items("HOSTS", []) == ["a.example.com", "b.example.com"]
    assert env.email("FROM", "") == "ASM Console <asm@example.com>"
    assert [str(n) for n in env.networks("NETS", [])] == ["127.0.0.0/8", "10.1.2.3/32"]
    assert Env({"NETS": "none"}).networks("NETS", ["10.0.0.0/8"]) == []


def test_secret_key_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "secret_key"
    first = secret_key_file(path)
    assert len(first) >= 50
    assert secret_key_file(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
