"""bench/detection runs on any corpus in the shared JSONL format and reports, for both engines,
the counts its JSON promises (never the speed)."""

from __future__ import annotations

import base64
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH = REPO_ROOT / "bench" / "detection"

pytest.importorskip("ddtrace.appsec._ddwaf", reason="the reference engine comes with ddtrace")


def record(record_id: str, label: str, uri: str, **fields: Any) -> dict[str, Any]:
    path, _, query = uri.partition("?")
    return {
        "id": record_id,
        "label": label,
        "category": fields.pop("category", "benign"),
        "subcategory": "test",
        "method": fields.pop("method", "GET"),
        "path": path,
        "query": query,
        "uri": uri,
        "http_version": "HTTP/1.1",
        "headers": {"Host": "localhost", "User-Agent": "bench-test", **fields.pop("headers", {})},
        "body": fields.pop("body", None),
        "body_b64": fields.pop("body_b64", None),
        "client_ip": fields.pop("client_ip", None),
        "source": fields.pop("source", "crs-regression:REQUEST-942/942100.yaml#1"),
        **fields,
    }


SERIALIZED_RUNTIME = b"\xac\xed\x00\x05sr\x00\x11java.lang.Runtime"

ATTACKS = [
    record(
        "t-sqli",
        "attack",
        "/item?id=1'%20OR%20'1'%3D'1",
        category="sql_injection",
        crs={"paranoia_level": 1},
    ),
    record(
        "t-xss",
        "attack",
        "/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        category="xss",
        source="handwritten",
    ),
    record(
        "t-java",
        "attack",
        "/rpc",
        method="POST",
        category="java_code_injection",
        headers={"Content-Type": "application/x-java-serialized-object"},
        body_b64=base64.b64encode(SERIALIZED_RUNTIME).decode(),
        crs={"paranoia_level": 2},
    ),
    record(
        "t-policy",
        "attack",
        "/",
        method="TEST",
        category="protocol_violation",
        crs={"paranoia_level": 1},
    ),
]
BENIGN = [
    record("t-normal", "benign", "/search?q=running+shoes", difficulty="normal"),
    record(
        "t-hard",
        "benign",
        "/api/posts",
        method="POST",
        difficulty="hard",
        headers={"Content-Type": "application/json"},
        body=json.dumps({"body": "Use `SELECT id FROM orders` to list them."}),
    ),
    record("t-near", "benign", "/get?initials=SU", difficulty="near_miss"),
    {"id": "t-ambiguous", "label": "ambiguous", "category": "unlabeled", "uri": "/"},
]


def write_corpus(directory: Path) -> Path:
    (directory / "attacks.jsonl").write_text(
        "".join(json.dumps(item) + "\n" for item in ATTACKS) + "\n", encoding="utf-8"
    )
    (directory / "benign.jsonl").write_text(
        "".join(json.dumps(item) + "\n" for item in BENIGN), encoding="utf-8"
    )
    return directory


def load_bench_module(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    # bench/ is not a package: load its library by path, registered while it runs (dataclasses
    # look their module up).
    spec = importlib.util.spec_from_file_location(
        "bench_detection_lib", REPO_ROOT / "bench" / "detection_lib.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_detection_bench_reports_counts_for_both_engines_as_json(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path)

    result = subprocess.run(
        [sys.executable, str(BENCH), str(corpus), "--json", "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["corpus"] == {"path": str(corpus), "attacks": 4, "benign": 3, "skipped": 1}
    assert set(report["engines"]) == {"asm_console", "libddwaf"}
    for name, engine in report["engines"].items():
        categories = engine["categories"]
        assert {category: row["total"] for category, row in categories.items()} == {
            "sql_injection": 1,
            "xss": 1,
            "java_code_injection": 1,
            "protocol_violation": 1,
        }, name
        for row in categories.values():
            assert 0 <= row["detected"] <= row["total"]
        assert {difficulty: row["total"] for difficulty, row in engine["benign"].items()} == {
            "normal": 1,
            "hard": 1,
            "near_miss": 1,
        }
        # The policy check (protocol_violation) is outside the paranoia and overall counts.
        assert {level: row["total"] for level, row in engine["levels"].items()} == {
            "pl1": 1,
            "pl2+": 1,
            "handwritten": 1,
        }
        assert engine["overall"]["total"] == 3
        assert engine["median_us"] > 0
        assert engine["p99_us"] >= engine["median_us"]
        assert engine["timed_out"] == 0

    ours = report["engines"]["asm_console"]
    assert ours["categories"]["sql_injection"]["detected"] == 1
    assert ours["categories"]["xss"]["detected"] == 1
    assert ours["categories"]["java_code_injection"]["detected"] == 1
    assert ours["benign"]["normal"]["flagged"] == 0
    assert ours["engine"]["rules"] > 0
    assert [aim["met"] in (True, False) for aim in report["aims"]] == [True] * 7


def test_the_bench_reads_every_record_as_the_worker_would(monkeypatch: pytest.MonkeyPatch) -> None:
    detection_lib = load_bench_module(monkeypatch)

    binary = detection_lib.request_from_record(ATTACKS[2])
    joined = detection_lib.request_from_record(
        record("t-headers", "benign", "/", headers={"X-Forwarded-For": "a", "x-forwarded-for": "b"})
    )

    assert binary.body == SERIALIZED_RUNTIME.decode("latin-1")
    assert binary.headers["content-type"] == "application/x-java-serialized-object"
    assert joined.headers["x-forwarded-for"] == "a, b"
    assert joined.body is None


def test_a_missing_corpus_file_is_an_error_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "attacks.jsonl").write_text("", encoding="utf-8")

    result = subprocess.run(
        [sys.executable, str(BENCH), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode != 0
    assert "benign.jsonl: not found" in result.stderr
