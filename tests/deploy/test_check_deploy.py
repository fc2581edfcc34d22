"""Production settings pass `check --deploy`; bad settings stop start-up with a clear message.

Each case runs manage.py in a subprocess, because the settings are read once, at import.
Nothing here connects to PostgreSQL or Redis: `check` only reads the settings.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.test_compose import REPO_ROOT, env_example_assignments, subprocess_environ

# Parsed, never connected to.
DATABASE_URL = "postgres://asm:asm@127.0.0.1:5432/asm"
BROKER_URL = "redis://127.0.0.1:6379/9"


def strong_secret_key() -> str:
    return secrets.token_urlsafe(48)  # 64 characters


def base_env(tmp_path: Path) -> dict[str, str]:
    return subprocess_environ({"ASM_DATA_DIR": str(tmp_path / "data")})


def production_env(tmp_path: Path) -> dict[str, str]:
    return {
        **base_env(tmp_path),
        "DATABASE_URL": DATABASE_URL,
        "CELERY_BROKER_URL": BROKER_URL,
        "SECRET_KEY": strong_secret_key(),
        "ALLOWED_HOSTS": "console.example.com",
    }


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_deploy_is_clean_with_production_settings(tmp_path: Path) -> None:
    result = manage(production_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNING" not in result.stderr


def test_check_deploy_flags_debug(tmp_path: Path) -> None:
    env = {**production_env(tmp_path), "DEBUG": "true"}
    result = manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert "security.W018" in result.stderr  # DEBUG in deployment
    # DEBUG also turns the HTTPS hardening off by default.
    assert "security.W008" in result.stderr  # no SECURE_SSL_REDIRECT
    assert "Traceback" not in result.stderr


def test_every_value_in_env_example_is_accepted(tmp_path: Path) -> None:
    # Every line uncommented: the documented defaults and examples must all parse, together.
    example = {name: value for name, value, _ in env_example_assignments()}
    env = {
        **base_env(tmp_path),
        **example,
        "SECRET_KEY": strong_secret_key(),
        "ASM_DATA_DIR": str(tmp_path / "data"),
    }
    result = manage(env, "check", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stderr
    shown = manage(env, "diffsettings", "--all")
    assert shown.returncode == 0, shown.stderr
    assert "ALLOWED_HOSTS = ['console.example.com']" in shown.stdout
    assert "SECURE_SSL_REDIRECT = True" in shown.stdout
    assert "EMAIL_BACKEND = 'django.core.mail.backends.smtp.EmailBackend'" in shown.stdout


@pytest.mark.parametrize(
    ("name", "bad_env"),
    [
        pytest.param(
            "DATABASE_URL",
            {"DATABASE_URL": "nonsense", "SECRET_KEY": strong_secret_key()},
            id="database-url-not-a-url",
        ),
        pytest.param(
            "DATABASE_URL",
            {"DATABASE_URL": "mysql://asm@db/asm", "SECRET_KEY": strong_secret_key()},
            id="database-url-unsupported",
        ),
        pytest.param(
            "CELERY_BROKER_URL",
            {"CELERY_BROKER_URL": "amqp://broker", "SECRET_KEY": strong_secret_key()},
            id="broker-url-not-redis",
        ),
        pytest.param("SECRET_KEY", {"DATABASE_URL": DATABASE_URL}, id="secret-key-missing"),
        pytest.param(
            "SECRET_KEY", {"CELERY_BROKER_URL": BROKER_URL}, id="secret-key-missing-broker"
        ),
        pytest.param(
            "SECRET_KEY",
            {"DATABASE_URL": DATABASE_URL, "SECRET_KEY": "a" * 64},
            id="secret-key-not-random",
        ),
        pytest.param("DEBUG", {"DEBUG": "maybe"}, id="debug-not-boolean"),
        pytest.param(
            "ASM_LOGIN_FAILURE_LIMIT", {"ASM_LOGIN_FAILURE_LIMIT": "abc"}, id="limit-not-number"
        ),
        pytest.param("ASM_SESSION_HOURS", {"ASM_SESSION_HOURS": "0"}, id="hours-out-of-range"),
        pytest.param("LOG_LEVEL", {"LOG_LEVEL": "loud"}, id="log-level-unknown"),
        pytest.param(
            "DEFAULT_FROM_EMAIL", {"DEFAULT_FROM_EMAIL": "not an address"}, id="from-not-email"
        ),
    ],
)
def test_bad_setting_stops_start_up_naming_the_variable(
    tmp_path: Path, name: str, bad_env: dict[str, str]
) -> None:
    result = manage({**base_env(tmp_path), **bad_env}, "check")
    assert result.returncode != 0
    assert f"{name}:" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
