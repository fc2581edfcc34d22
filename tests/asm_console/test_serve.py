"""The README's first command: `manage.py serve` on the embedded default, nothing else running."""

from __future__ import annotations

import http.cookiejar
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _embedded_env(data_dir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "SECRET_KEY", "DJANGO_SETTINGS_MODULE")
    }
    return {**env, "ASM_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}


class Console:
    def __init__(self, data_dir: Path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(self.port)],
            cwd=ROOT,
            env=_embedded_env(data_dir),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output: list[str] = []
        deadline = time.monotonic() + 60
        assert self.process.stdout is not None
        while "serving at" not in "".join(self.output):
            assert time.monotonic() < deadline, "".join(self.output)
            line = self.process.stdout.readline()
            assert line or self.process.poll() is None, "".join(self.output)
            self.output.append(line)
        self.wait_healthy()

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.base}/healthz", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, "the console never became healthy"
            time.sleep(0.2)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        assert self.process.stdout is not None
        self.output.append(self.process.stdout.read())
        return code


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def console(data_dir: Path) -> Iterator[Console]:
    running = Console(data_dir)
    try:
        yield running
    finally:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait(timeout=10)


def _sign_in(base: str, username: str, password: str) -> urllib.request.OpenerDirector:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(f"{base}/accounts/login/", timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token is not None
    form = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": token.group(1), "username": username, "password": password}
    ).encode()
    request = urllib.request.Request(
        f"{base}/accounts/login/", data=form, headers={"Referer": f"{base}/accounts/login/"}
    )
    response = opener.open(request, timeout=10)
    assert response.url == f"{base}/services/", response.url
    return opener


@pytest.mark.integration
def test_serve_runs_the_whole_console_with_nothing_else(console: Console, data_dir: Path) -> None:
    startup = "".join(console.output)
    match = re.search(r"username: (\S+)\n\s+password: (\S+)", startup)
    assert match, startup
    username, password = match.groups()

    opener = _sign_in(console.base, username, password)
    catalog = opener.open(f"{console.base}/services/", timeout=10).read().decode()
    assert "No services yet" in catalog
    assert (data_dir / "asm.sqlite3").exists()
    assert (data_dir / "secret_key").exists()

    # The in-process worker consumes what another process enqueues on the embedded broker.
    database = sqlite3.connect(data_dir / "asm.sqlite3")
    database.execute(
        "INSERT INTO django_session (session_key, session_data, expire_date) "
        "VALUES ('expired-session-key-000000000000', '', '2000-01-01 00:00:00')"
    )
    database.commit()
    subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from accounts.tasks import prune_auth_records; prune_auth_records.delay()",
        ],
        cwd=ROOT,
        env=_embedded_env(data_dir),
        check=True,
        timeout=60,
    )
    deadline = time.monotonic() + 30
    while database.execute(
        "SELECT count(*) FROM django_session WHERE session_key = 'expired-session-key-000000000000'"
    ).fetchone() != (0,):
        assert time.monotonic() < deadline, "the in-process worker did not run the task"
        time.sleep(0.2)
    database.close()

    assert console.stop() == 0


@pytest.mark.integration
def test_restart_keeps_the_admin_and_the_secret(data_dir: Path) -> None:
    first = Console(data_dir)
    assert first.stop() == 0
    secret = (data_dir / "secret_key").read_text()
    second = Console(data_dir)
    try:
        assert "password:" not in "".join(second.output)
    finally:
        assert second.stop() == 0
    assert (data_dir / "secret_key").read_text() == secret
