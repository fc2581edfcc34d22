"""Compiled Hyperscan databases are cached: in the process, and serialized in a directory that
the next worker process loads from instead of compiling (seconds for the shipped rules)."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest

from signals.detection import engine as engine_module
from signals.detection import loader
from signals.detection.engine import Engine
from signals.detection.request import HttpRequest, addresses
from signals.detection.rules import parse_rule_file

QUERY = {"address": "server.request.query"}
UA = {"address": "server.request.headers.no_cookies", "key_path": ["user-agent"]}


def _regex_rule(rule_id: str, pattern: str, *inputs: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": rule_id,
        "name": rule_id,
        "tags": {"type": "test", "category": "attack_attempt"},
        "conditions": [
            {
                "operator": "match_regex",
                "parameters": {"inputs": list(inputs), "regex": pattern},
            }
        ],
        "transformers": ["urlDecodeUni"],
    }


RULES = {
    "rules": [
        _regex_rule("union", r"union\s+select", QUERY),
        _regex_rule("traversal", r"\.\./\.\./", QUERY),
        _regex_rule("scanner", r"^sqlmap/", UA),
    ]
}
ATTACKS = {
    "/?q=1%20UNION%20SELECT%20password": ["union"],
    "/?file=..%2F..%2Fetc%2Fpasswd": ["traversal"],
    "/?q=hello": [],
}


@pytest.fixture(autouse=True)
def _empty_memory_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each test starts as a fresh worker process would: nothing compiled in memory.
    monkeypatch.setattr(engine_module, "_memory_cache", OrderedDict())


def _forget_memory() -> None:
    engine_module._memory_cache.clear()


def _refuse_compiling(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any) -> Any:
        raise AssertionError("compiled although a cached database was expected")

    monkeypatch.setattr(engine_module, "_compile", refuse)


def _matched(engine: Engine) -> dict[str, list[str]]:
    found = {}
    for uri, _ in ATTACKS.items():
        request = HttpRequest(method="GET", uri=uri, headers={"user-agent": "sqlmap/1.8"})
        found[uri] = [match.rule.id for match in engine.run(addresses(request)).matches]
    return found


def _expected() -> dict[str, list[str]]:
    return {uri: [*ids, "scanner"] for uri, ids in ATTACKS.items()}


def test_a_second_engine_loads_the_serialized_database_and_matches_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = Engine(parse_rule_file(RULES), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.hsdb"))) == 1  # one transformer chain, one database
    _forget_memory()  # as in another process
    _refuse_compiling(monkeypatch)
    second = Engine(parse_rule_file(RULES), cache_dir=tmp_path)
    assert _matched(first) == _matched(second) == _expected()


def test_a_second_engine_in_the_same_process_shares_the_compiled_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = Engine(parse_rule_file(RULES))
    _refuse_compiling(monkeypatch)
    second = Engine(parse_rule_file(RULES))
    (first_prefilter,) = first._prefilters.values()
    (second_prefilter,) = second._prefilters.values()
    assert second_prefilter.database is first_prefilter.database
    assert _matched(second) == _expected()


def test_other_expressions_do_not_load_a_database_cached_for_these(tmp_path: Path) -> None:
    Engine(parse_rule_file(RULES), cache_dir=tmp_path)
    _forget_memory()
    changed = {"rules": [*RULES["rules"][:2], _regex_rule("scanner", r"^nikto", UA)]}
    engine = Engine(parse_rule_file(changed), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.hsdb"))) == 2
    request = HttpRequest(uri="/", headers={"user-agent": "Nikto/2.5"})
    assert [match.rule.id for match in engine.run(addresses(request)).matches] == ["scanner"]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: b"", id="empty"),
        pytest.param(lambda data: b"not a database at all", id="garbage"),
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(
            lambda data: data[:-100] + bytes(b ^ 0xFF for b in data[-100:]), id="flipped bytes"
        ),
    ],
)
def test_a_damaged_cache_file_is_ignored_and_rebuilt(
    tmp_path: Path, damage: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    Engine(parse_rule_file(RULES), cache_dir=tmp_path)
    (cached,) = tmp_path.glob("*.hsdb")
    good = cached.read_bytes()
    cached.write_bytes(damage(good))
    _forget_memory()

    rebuilt = Engine(parse_rule_file(RULES), cache_dir=tmp_path)

    assert _matched(rebuilt) == _expected()
    # Written again, so the next process loads it without compiling.
    _forget_memory()
    _refuse_compiling(monkeypatch)
    assert _matched(Engine(parse_rule_file(RULES), cache_dir=tmp_path)) == _expected()


def test_an_unwritable_cache_directory_does_not_stop_detection(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the directory should be")
    engine = Engine(parse_rule_file(RULES), cache_dir=blocker / "cache")
    assert _matched(engine) == _expected()


def test_the_cache_keeps_a_bounded_number_of_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "DISK_CACHE_ENTRIES", 2)
    for number in range(4):
        Engine(
            parse_rule_file({"rules": [_regex_rule("r", f"needle{number}", QUERY)]}),
            cache_dir=tmp_path,
        )
    assert len(list(tmp_path.glob("*.hsdb"))) == 2
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.django_db
def test_the_workers_engine_keeps_its_databases_in_the_data_directory(
    tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.DATA_DIR = tmp_path
    monkeypatch.setattr(loader, "_engine", None)
    monkeypatch.setattr(loader, "builtin_rules", lambda: parse_rule_file(RULES))
    engine = loader.current_engine()
    assert loader.current_engine() is engine
    assert len(list((tmp_path / "cache" / "hyperscan").glob("*.hsdb"))) == 1
    assert _matched(engine) == _expected()
