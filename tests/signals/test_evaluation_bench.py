"""bench/signals runs end to end on a tiny load and reports its figures (never their speed).

It needs the PostgreSQL of this machine, as the production-process tests do.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH = REPO_ROOT / "bench" / "signals"
POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"


def bench_databases() -> set[str]:
    with psycopg.connect(POSTGRES_URL, connect_timeout=3) as connection:
        rows = connection.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'asm_bench_%'"
        ).fetchall()
    return {str(row[0]) for row in rows}


def test_signals_bench_reports_its_figures_as_json() -> None:
    try:
        before = bench_databases()
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_URL}: {exc}")

    result = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--json",
            "--events",
            "400",
            "--attackers",
            "20",
            "--batch-size",
            "150",
            "--increments",
            "3",
            "--increment-size",
            "20",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["events_per_s"] > 0
    assert report["incremental_events_per_s"] > 0
    assert report["backlog"]["events"] == 400
    assert report["backlog"]["signals_created"] > 0
    assert report["incremental"]["events"] == 60
    assert report["incremental"]["rounds"] == 3
    assert report["machine"]["postgresql"]
    # Its database is gone (another run's may come and go meanwhile).
    assert not (bench_databases() - before)
