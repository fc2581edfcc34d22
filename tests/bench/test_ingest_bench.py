"""bench/ingest runs end to end on a tiny load and reports its figures (never their speed).

It needs the PostgreSQL and Redis of this machine, as the production-process tests do.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import redis

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH = REPO_ROOT / "bench" / "ingest"
POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"
# The benchmark's broker database must be empty, and is emptied at the end: this one is the
# smoke test's own, apart from the database a benchmark run by hand uses (12).
BROKER_URL = "redis://127.0.0.1:6379/13"
FIGURES = ("intake_spans_per_s", "processed_spans_per_s", "copy_spans_per_s", "ratio_to_copy")


@pytest.fixture
def servers() -> None:
    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_URL}: {exc}")
    client = redis.Redis.from_url(BROKER_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {BROKER_URL}: {exc}")
    finally:
        client.close()


def bench_databases() -> set[str]:
    with psycopg.connect(POSTGRES_URL, connect_timeout=3) as connection:
        rows = connection.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'asm_bench_%'"
        ).fetchall()
    return {str(row[0]) for row in rows}


@pytest.mark.usefixtures("servers")
def test_ingest_bench_reports_its_figures_as_json() -> None:
    before = bench_databases()

    result = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--json",
            "--spans",
            "600",
            "--attack-share",
            "0.5",
            "--database-url",
            POSTGRES_URL,
            "--broker-url",
            BROKER_URL,
            "--timeout",
            "240",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert set(FIGURES) <= set(report)
    for key in FIGURES:
        value = report[key]
        assert isinstance(value, (int, float)), (key, value)
        assert not isinstance(value, bool), (key, value)
        assert value > 0, (key, value)
    # Every span sent was acknowledged, processed and stored, and the payloads carried attacks.
    assert report["spans"] == 600
    assert report["processing"]["span_rows"] == 600
    assert report["copy"]["spans"] == 600
    assert report["processing"]["security_events"] > 0
    assert report["intake"]["failures"] == 0
    # The benchmark's database is gone.
    assert bench_databases() <= before
