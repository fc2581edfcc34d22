"""The engine over whole requests: rule semantics, one pass, the budget, hostile input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signals.detection.engine import Engine
from signals.detection.request import HttpRequest, addresses
from signals.detection.rules import RuleError, parse_rule, parse_rule_file


def rule(
    rule_id: str, *conditions: dict[str, Any], transformers: list[str] | None = None
) -> dict[str, Any]:
    return {
        "id": rule_id,
        "name": rule_id,
        "tags": {"type": "test", "category": "attack_attempt"},
        "conditions": list(conditions),
        "transformers": transformers or [],
    }


def regex(pattern: str, *inputs: dict[str, Any], **options: Any) -> dict[str, Any]:
    return {
        "operator": "match_regex",
        "parameters": {"inputs": list(inputs), "regex": pattern, "options": options},
    }


QUERY = {"address": "server.request.query"}
UA = {"address": "server.request.headers.no_cookies", "key_path": ["user-agent"]}


def run(rules: list[dict[str, Any]], request: HttpRequest) -> list[str]:
    engine = Engine(parse_rule_file({"rules": rules}))
    return [match.rule.id for match in engine.run(addresses(request)).matches]


def test_conditions_are_anded_and_inputs_ored() -> None:
    both = rule("both", regex("evil", QUERY), regex("^sqlmap", UA))
    request = HttpRequest(method="GET", uri="/?q=evil", headers={"user-agent": "sqlmap/1.7"})
    assert run([both], request) == ["both"]
    assert (
        run([both], HttpRequest(method="GET", uri="/?q=evil", headers={"user-agent": "curl"})) == []
    )


def test_key_path_narrows_the_input() -> None:
    only_q = rule("only-q", regex("evil", {"address": "server.request.query", "key_path": ["q"]}))
    assert run([only_q], HttpRequest(uri="/?q=evil")) == ["only-q"]
    assert run([only_q], HttpRequest(uri="/?other=evil")) == []


def test_transformers_run_before_the_operator() -> None:
    decoded = rule("decoded", regex("<script", QUERY), transformers=["urlDecodeUni", "lowercase"])
    raw = rule("raw", regex("<script", QUERY, case_sensitive=True))
    assert run([decoded, raw], HttpRequest(uri="/?q=%3CSCRIPT%3E")) == ["decoded"]


def test_keys_only_scans_parameter_names() -> None:
    names = rule("names", regex("^__proto__$", QUERY), transformers=["keys_only"])
    assert run([names], HttpRequest(uri="/?__proto__=1")) == ["names"]
    assert run([names], HttpRequest(uri="/?x=__proto__")) == []


def test_negated_operator() -> None:
    not_get = rule(
        "not-get",
        {
            "operator": "!match_regex",
            "parameters": {
                "inputs": [{"address": "server.request.method"}],
                "regex": "^(GET|POST)$",
            },
        },
    )
    assert run([not_get], HttpRequest(method="TRACE")) == ["not-get"]
    assert run([not_get], HttpRequest(method="GET")) == []


def test_a_match_explains_itself() -> None:
    engine = Engine(parse_rule_file({"rules": [rule("xss", regex("<script[^>]*>", QUERY))]}))
    (match,) = engine.run(addresses(HttpRequest(uri="/?q=%3Cscript%3E", method="GET"))).matches
    trigger = match.as_trigger()
    assert trigger["rule"]["id"] == "xss"
    (rule_match,) = trigger["rule_matches"]
    assert rule_match["operator"] == "match_regex"
    assert rule_match["operator_value"] == "<script[^>]*>"
    (parameter,) = rule_match["parameters"]
    assert parameter["address"] == "server.request.query"
    assert parameter["key_path"] == ["q", 0]
    assert parameter["highlight"] == ["<script>"]


def test_json_bodies_cookies_and_forms_without_content_type_are_scanned() -> None:
    body_rule = rule("body", regex("\\$where", {"address": "server.request.body"}))
    cookie_rule = rule("cookie", regex("evil", {"address": "server.request.cookies"}))
    json_body = HttpRequest(
        method="POST",
        uri="/",
        body='{"a": {"$where": "1"}}',
        headers={"content-type": "application/json"},
    )
    assert run([body_rule], json_body) == []  # keys are not values
    keys = rule(
        "keys", regex("^\\$where$", {"address": "server.request.body"}), transformers=["keys_only"]
    )
    assert run([keys], json_body) == ["keys"]
    form = HttpRequest(method="POST", uri="/", body="user=bob&q=$where")
    assert run([body_rule], form) == ["body"]
    assert run([cookie_rule], HttpRequest(headers={"cookie": "session=abc; pref=evil"})) == [
        "cookie"
    ]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"rules": [{"id": "x"}]}, "rule 'x': name must be a non-empty string"),
        (
            {"rules": [rule("bad-op", {"operator": "nope", "parameters": {"inputs": [QUERY]}})]},
            "rule 'bad-op' condition 0: unknown operator 'nope'",
        ),
        ({"rules": [rule("bad-re", regex("(?<=a)b", QUERY))]}, "rule 'bad-re' condition 0: "),
        (
            {"rules": [rule("bad-tr", regex("a", QUERY), transformers=["rot13"])]},
            "rule 'bad-tr': unknown transformer 'rot13'",
        ),
        (
            {"rules": [rule("bad-addr", regex("a", {"address": "server.nope"}))]},
            "rule 'bad-addr' condition 0: unknown address 'server.nope'",
        ),
        (
            {"rules": [rule("dup", regex("a", QUERY)), rule("dup", regex("b", QUERY))]},
            "rule 'dup': the id is used twice",
        ),
        ({"nope": []}, "rules: expected a list of rules"),
    ],
)
def test_invalid_rules_are_refused_naming_the_rule(document: Any, message: str) -> None:
    with pytest.raises(RuleError) as excinfo:
        parse_rule_file(document)
    assert str(excinfo.value).startswith(message)


def test_a_datadog_rule_loads_unchanged() -> None:
    import json

    from ddtrace.appsec._constants import DEFAULT

    datadog = json.loads(Path(DEFAULT.RULES).read_text())
    sqli = next(r for r in datadog["rules"] if r["id"] == "crs-942-100")
    assert parse_rule(sqli).id == "crs-942-100"


def test_the_budget_stops_evaluation_and_says_so() -> None:
    rules = [rule(f"r{i}", regex(f"needle{i}", QUERY)) for i in range(50)]
    engine = Engine(parse_rule_file({"rules": rules}), budget_us=1)
    result = engine.run(addresses(HttpRequest(uri="/?q=needle49")))
    assert result.timed_out
    assert result.matches == []


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=200),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.text(max_size=10),
    uri=st.text(max_size=300),
    headers=st.dictionaries(st.text(max_size=30), st.text(max_size=300), max_size=8),
    body=st.none() | st.text(max_size=2000),
    content_type=st.sampled_from(
        [
            "",
            "application/json",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "text/xml",
        ]
    ),
    extra=json_values,
)
def test_no_input_crashes_the_shipped_rules(
    method: str, uri: str, headers: dict[str, str], body: str | None, content_type: str, extra: Any
) -> None:
    from signals.detection.loader import builtin_rules

    engine = _shipped_engine(builtin_rules)
    request = HttpRequest(
        method=method,
        uri=uri,
        headers={**{k.lower(): v for k, v in headers.items()}, "content-type": content_type},
        body=body,
    )
    result = engine.run({**addresses(request), "server.request.path_params": extra})
    assert result.duration_us >= 0
    assert not result.timed_out


_ENGINES: dict[int, Engine] = {}


def _shipped_engine(loader: Any) -> Engine:
    key = id(loader)
    if key not in _ENGINES:
        _ENGINES[key] = Engine(loader(), budget_us=2_000_000)
    return _ENGINES[key]
