"""How the engine avoids work: rules Hyperscan rules out are not evaluated at all, key paths
are resolved before any value is transformed, and expressions Hyperscan cannot compile exactly
still match through RE2."""

from __future__ import annotations

from typing import Any

import hyperscan
from hypothesis import given
from hypothesis import strategies as st

from signals.detection import engine as engine_module
from signals.detection.engine import Engine, KeyPath, _flatten, _select
from signals.detection.operators import Match, Operator
from signals.detection.request import HttpRequest, addresses
from signals.detection.rules import parse_rule_file

QUERY = {"address": "server.request.query"}
UA = {"address": "server.request.headers.no_cookies", "key_path": ["user-agent"]}


def rule(rule_id: str, *conditions: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": rule_id,
        "name": rule_id,
        "tags": {"type": "test", "category": "attack_attempt"},
        "conditions": list(conditions),
        **extra,
    }


def regex(pattern: str, *inputs: dict[str, Any]) -> dict[str, Any]:
    return {"operator": "match_regex", "parameters": {"inputs": list(inputs), "regex": pattern}}


def sqli(*inputs: dict[str, Any]) -> dict[str, Any]:
    return {"operator": "is_sqli", "parameters": {"inputs": list(inputs)}}


class Counting:
    """An operator that counts the values it was given."""

    def __init__(self, operator: Operator) -> None:
        self.operator = operator
        self.values: list[str] = []

    def __call__(self, value: str) -> Match | None:
        self.values.append(value)
        return self.operator(value)


def test_a_rule_whose_expression_hyperscan_did_not_report_costs_nothing_else() -> None:
    (both,) = parse_rule_file({"rules": [rule("both", sqli(QUERY), regex("^sqlmap/", UA))]})
    counting = Counting(both.conditions[0].operator)
    both.conditions[0].operator = counting
    engine = Engine([both])
    injection = "/?id=1%27%20OR%201%3D1--"

    browser = HttpRequest(uri=injection, headers={"user-agent": "Mozilla/5.0"})
    assert engine.run(addresses(browser)).matches == []
    assert counting.values == []  # libinjection never ran

    tool = HttpRequest(uri=injection, headers={"user-agent": "sqlmap/1.8"})
    assert [match.rule.id for match in engine.run(addresses(tool)).matches] == ["both"]
    assert counting.values == ["1' OR 1=1--"]


def test_an_expression_reported_for_another_input_does_not_open_the_rule() -> None:
    # Both expressions share a database; "evil" in the user agent must not count for a rule
    # that reads the query.
    rules = [rule("query", regex("evil", QUERY)), rule("agent", regex("sqlmap", UA))]
    engine = Engine(parse_rule_file({"rules": rules}))
    request = HttpRequest(uri="/?q=fine", headers={"user-agent": "evil sqlmap"})
    assert [match.rule.id for match in engine.run(addresses(request)).matches] == ["agent"]


def test_rules_are_reported_in_rule_file_order_whatever_the_scan_order() -> None:
    rules = [
        rule("agent", regex("sqlmap", UA)),
        rule("query", regex("evil", QUERY)),
        rule("sqli", sqli(QUERY)),
    ]
    engine = Engine(parse_rule_file({"rules": rules}))
    request = HttpRequest(uri="/?q=evil%27%20OR%201%3D1--", headers={"user-agent": "sqlmap"})
    assert [m.rule.id for m in engine.run(addresses(request)).matches] == ["agent", "query", "sqli"]


def test_only_the_selected_key_is_transformed() -> None:
    (agent,) = parse_rule_file({"rules": [rule("agent", sqli(UA), transformers=["urlDecodeUni"])]})
    counting = Counting(agent.conditions[0].operator)
    agent.conditions[0].operator = counting
    request = HttpRequest(
        uri="/",
        headers={"user-agent": "1%27%20OR%201%3D1--", "referer": "x", "accept": "*/*"},
    )
    assert [m.rule.id for m in Engine([agent]).run(addresses(request)).matches] == ["agent"]
    assert counting.values == ["1' OR 1=1--"]


def test_an_expression_hyperscan_cannot_compile_still_matches_through_re2() -> None:
    # \C (any byte) is valid RE2; Hyperscan refuses it in UTF-8 mode, even as a prefilter.
    rules = [rule("odd", regex("evil\\C", QUERY)), rule("plain", regex("evil", QUERY))]
    engine = Engine(parse_rule_file({"rules": rules}))
    (prefilter,) = engine._prefilters.values()
    assert prefilter.unscanned == {0}
    assert [m.rule.id for m in engine.run(addresses(HttpRequest(uri="/?q=evilx"))).matches] == [
        "odd",
        "plain",
    ]
    assert engine.run(addresses(HttpRequest(uri="/?q=fine"))).matches == []


def test_an_expression_that_needs_the_prefilter_flag_keeps_the_others_exact() -> None:
    flags = hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_ALLOWEMPTY
    patterns = [b"(x|y)\\1", b"abc", b"\\C"]
    utf8 = flags | hyperscan.HS_FLAG_UTF8
    database, unscanned = engine_module._compile(patterns, [flags, flags, utf8])
    assert unscanned == {2}
    assert database is not None
    hits: set[int] = set()
    database.scan(b"abc", match_event_handler=lambda i, *_: hits.add(i))
    assert hits == {1}
    database.scan(b"xx", match_event_handler=lambda i, *_: hits.add(i))
    assert hits == {0, 1}


def test_the_budget_is_checked_while_scanning_too() -> None:
    rules = [
        rule(f"r{i}", regex(f"needle{i}", {"address": f"server.request.{a}"}))
        for i, a in enumerate(["query", "body", "cookies", "path_params", "method"])
    ]
    engine = Engine(parse_rule_file({"rules": rules}), budget_us=1)
    request = HttpRequest(
        method="needle4",
        uri="/needle3?q=needle0",
        body="a=needle1",
        headers={"cookie": "c=needle2"},
    )
    result = engine.run(addresses(request))
    assert result.timed_out
    assert len(result.matches) < 5
    assert Engine(parse_rule_file({"rules": rules})).run(addresses(request)).matches


# --- key paths ---------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["a", "b", "0", "1", "x y"]), children, max_size=4)
    ),
    max_leaves=25,
)


def _selected_by_flattening(value: Any, key_path: KeyPath, structure: str) -> list[Any]:
    """What the engine used to do: flatten everything, then keep the paths under the key
    path, keys compared as strings."""
    return [
        (path, text)
        for path, text in _flatten(value, structure)
        if len(path) >= len(key_path)
        and all(str(a) == str(b) for a, b in zip(path, key_path, strict=False))
    ]


@given(
    value=json_values,
    key_path=st.lists(st.sampled_from(["a", "b", "0", "1", "00", "-1", 0, 1, 2]), max_size=3),
    structure=st.sampled_from(["", "keys_only", "values_only"]),
)
def test_selecting_a_key_path_finds_what_flattening_everything_did(
    value: Any, key_path: list[str | int], structure: str
) -> None:
    path = tuple(key_path)
    assert _select(value, path, structure) == _selected_by_flattening(value, path, structure)
