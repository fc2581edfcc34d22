"""Detection rules in the public format of Datadog's appsec-event-rules.

A rule file is `{"version": "2.x", "rules": [...]}` (or a bare list of rules). Each rule:
`{"id", "name", "tags": {"type", "category", ...}, "conditions": [{"operator",
"parameters": {"inputs": [{"address", "key_path"?}], ...operator parameters}}],
"transformers": [...], "on_match": [...]}`. All conditions must match (AND); a condition
matches when its operator matches any of its inputs (OR).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from signals.detection.operators import OPERATORS, Operator, OperatorError
from signals.detection.transformers import STRUCTURE_TRANSFORMERS, TRANSFORMERS

ADDRESSES = {
    "server.request.method",
    "server.request.uri.raw",
    "server.request.query",
    "server.request.headers.no_cookies",
    "server.request.cookies",
    "server.request.body",
    "server.request.body.filenames",
    "server.request.path_params",
    "http.client_ip",
    "usr.id",
}
# Addresses of Datadog's rules that a trace never carries (gRPC, GraphQL, responses, RASP):
# accepted in a rule file, never matched here.
FOREIGN_ADDRESS_PREFIXES = (
    "grpc.",
    "graphql.",
    "server.response.",
    "server.io.",
    "server.db.",
    "server.sys.",
    "server.business_logic.",
    "usr.session_id",
    "server.request.jwt",
    "server.request.body.files_content",
)


class RuleError(ValueError):
    """A rule is not valid; the message names it."""


@dataclass(frozen=True, slots=True)
class Input:
    address: str
    key_path: tuple[str | int, ...] = ()


@dataclass(slots=True)
class Condition:
    operator_name: str
    operator: Operator
    inputs: list[Input]
    negated: bool = False


@dataclass(slots=True)
class Rule:
    id: str
    name: str
    tags: dict[str, str]
    conditions: list[Condition]
    transformers: tuple[str, ...] = ()
    structure: str = ""  # "", "keys_only" or "values_only"
    on_match: list[str] = field(default_factory=list)

    @property
    def type(self) -> str:
        return self.tags.get("type", "")

    @property
    def category(self) -> str:
        return self.tags.get("category", "")


def _fail(where: str, message: str) -> RuleError:
    return RuleError(f"{where}: {message}")


def _parse_input(raw: Any, where: str) -> Input:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("address"), str):
        raise _fail(where, "each input needs an address")
    address = raw["address"]
    if address not in ADDRESSES and not address.startswith(FOREIGN_ADDRESS_PREFIXES):
        raise _fail(where, f"unknown address {address!r}")
    key_path = raw.get("key_path", [])
    if not isinstance(key_path, list) or not all(isinstance(k, (str, int)) for k in key_path):
        raise _fail(where, "key_path must be a list of strings and numbers")
    return Input(address, tuple(key_path))


def parse_rule(raw: Any, where: str = "rule") -> Rule:
    if not isinstance(raw, Mapping):
        raise _fail(where, "expected an object")
    rule_id = raw.get("id")
    if not isinstance(rule_id, str) or not rule_id.strip() or len(rule_id) > 100:
        raise _fail(where, "id must be a non-empty string of at most 100 characters")
    where = f"rule {rule_id!r}"
    name = raw.get("name", "")
    tags = raw.get("tags")
    if not isinstance(name, str) or not name:
        raise _fail(where, "name must be a non-empty string")
    if not isinstance(tags, Mapping) or not isinstance(tags.get("type"), str):
        raise _fail(where, "tags.type is required")
    tag_values = {str(k): str(v) for k, v in tags.items()}
    tag_values.setdefault("category", "attack_attempt")
    chain = raw.get("transformers", [])
    if not isinstance(chain, list) or not all(isinstance(t, str) for t in chain):
        raise _fail(where, "transformers must be a list of names")
    structure = ""
    string_chain = []
    for name_ in chain:
        if name_ in STRUCTURE_TRANSFORMERS:
            structure = name_
        elif name_ in TRANSFORMERS:
            string_chain.append(name_)
        else:
            raise _fail(where, f"unknown transformer {name_!r}")
    conditions_raw = raw.get("conditions")
    if not isinstance(conditions_raw, list) or not conditions_raw:
        raise _fail(where, "conditions must be a non-empty list")
    conditions = []
    for index, condition in enumerate(conditions_raw):
        at = f"{where} condition {index}"
        if not isinstance(condition, Mapping) or not isinstance(condition.get("operator"), str):
            raise _fail(at, "expected an object with an operator")
        operator_name = condition["operator"]
        negated = operator_name.startswith("!")
        base = operator_name.lstrip("!")
        if base not in OPERATORS:
            raise _fail(at, f"unknown operator {operator_name!r}")
        parameters = condition.get("parameters")
        if not isinstance(parameters, Mapping):
            raise _fail(at, "parameters must be an object")
        inputs_raw = parameters.get("inputs")
        if not isinstance(inputs_raw, list) or not inputs_raw:
            raise _fail(at, "parameters.inputs must be a non-empty list")
        inputs = [_parse_input(item, at) for item in inputs_raw]
        try:
            operator = OPERATORS[base](dict(parameters))
        except OperatorError as exc:
            raise _fail(at, str(exc)) from None
        conditions.append(Condition(base, operator, inputs, negated))
    on_match = raw.get("on_match", [])
    if not isinstance(on_match, list) or not all(isinstance(a, str) for a in on_match):
        raise _fail(where, "on_match must be a list of action names")
    return Rule(
        id=rule_id,
        name=name,
        tags=tag_values,
        conditions=conditions,
        transformers=tuple(string_chain),
        structure=structure,
        on_match=list(on_match),
    )


def parse_rule_file(document: Any) -> list[Rule]:
    """All rules of a rule file, or RuleError naming the first bad one."""
    raw_rules: Sequence[Any]
    if isinstance(document, Mapping):
        raw_rules = document.get("rules")  # type: ignore[assignment]
        if not isinstance(raw_rules, list):
            raise RuleError("rules: expected a list of rules")
    elif isinstance(document, list):
        raw_rules = document
    else:
        raise RuleError("expected an object with a `rules` list, or a list of rules")
    rules = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_rules):
        rule = parse_rule(raw, f"rules[{index}]")
        if rule.id in seen:
            raise RuleError(f"rule {rule.id!r}: the id is used twice")
        seen.add(rule.id)
        rules.append(rule)
    return rules
