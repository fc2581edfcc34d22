"""bench/ui runs end to end on a tiny seed and reports its figures (never their speed).

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
BENCH = REPO_ROOT / "bench" / "ui"
POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"
HEADLINE = {"catalog", "explorer", "signals", "trace"}


def bench_databases() -> set[str]:
    with psycopg.connect(POSTGRES_URL, connect_timeout=3) as connection:
        rows = connection.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'asm_bench_%'"
        ).fetchall()
    return {str(row[0]) for row in rows}


def test_ui_bench_reports_each_page_as_json() -> None:
    try:
        before = bench_databases()
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_URL}: {exc}")

    result = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--json",
            "--spans",
            "2000",
            "--events",
            "200",
            "--services",
            "5",
            "--signals",
            "10",
            "--requests",
            "3",
            "--warmups",
            "1",
            "--database-url",
            POSTGRES_URL,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    # Exactly what was asked for was seeded.
    seed = report["seed"]
    assert (seed["spans"], seed["security_events"], seed["services"], seed["signals"]) == (
        2000,
        200,
        5,
        10,
    )
    assert sum(seed["signal_statuses"].values()) == 10
    assert seed["attack_traces"] > 0
    # Every page was measured, each with its figures; the four the issue names lead.
    assert set(report["headline"]) == HEADLINE
    assert {page["group"] for page in report["pages"]} == HEADLINE
    for page in report["pages"]:
        assert page["requests"] == 3, page["name"]
        for key in ("median_ms", "p95_ms", "sql_ms"):
            assert isinstance(page[key], (int, float)), (page["name"], key)
            # The SQL time of one request, rounded to the millisecond, can be 0 on a tiny seed.
            assert page[key] >= 0, (page["name"], key)
        assert page["p95_ms"] >= page["median_ms"] > 0, page["name"]
        assert page["queries"] >= page["queries_min"] > 0, page["name"]
        assert page["rows"] >= page["rows_min"] > 0, page["name"]
        assert isinstance(page["aim_met"], bool), page["name"]
    for figures in report["headline"].values():
        assert set(figures) == {"median_ms", "p95_ms", "queries", "aim_met"}
    assert set(report["queries_constant"]) == HEADLINE
    assert report["machine"]["postgresql"]
    assert report["machine"]["cpus"] >= 1
    # Its database is gone (another run's may come and go meanwhile).
    assert not (bench_databases() - before)
