from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from asm_console.celery import app as celery_app

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_healthy(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}
    assert "no-store" in response["Cache-Control"]


@pytest.mark.django_db
def test_broker_down_is_503(client: Client) -> None:
    names = ("broker_url", "broker_read_url", "broker_write_url")
    original = {name: celery_app.conf[name] for name in names}
    # Nothing listens on port 1: the connection is refused at once.
    celery_app.conf.update(dict.fromkeys(names, "redis://127.0.0.1:1/0"))
    try:
        response = client.get("/healthz")
    finally:
        celery_app.conf.update(original)
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "broker": "unavailable"},
    }


def test_database_down_is_503(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ASM_DATA_DIR": str(tmp_path),
        "DATABASE_URL": "postgres://postgres@127.0.0.1:1/asm",
        "CELERY_BROKER_URL": "redis://127.0.0.1:1/0",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ASM_HTTPS": "false",
    }
    script = (
        "import django, json; django.setup();"
        "from django.test import Client;"
        "r = Client().get('/healthz', HTTP_HOST='localhost');"
        "print(r.status_code, r.content.decode())"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "asm_console.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    status, body = result.stdout.strip().splitlines()[-1].split(" ", 1)
    assert status == "503"
    assert json.loads(body)["checks"] == {"database": "unavailable", "broker": "unavailable"}


@pytest.mark.django_db
def test_health_is_public_but_says_nothing_else(client: Client) -> None:
    body = client.get("/healthz").content.decode()
    assert "redis" not in body
    assert "sqlite" not in body
    assert "postgres" not in body
