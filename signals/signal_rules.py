"""Signal rules: when the security events of a time window deserve a signal, and how severe.

A rule is plain data (JSON), the same for the shipped rules (`signals/rules/signal_rules.json`),
a built-in rule a user tuned and a custom rule (both kept in `SignalRule.definition`)::

    {
      "id": "sqli-attempts",                      # [a-z0-9][a-z0-9_.-]*, at most 100 characters
      "name": "SQL injection attempts",
      "title": "SQL injection attempts on {service} from {client_ip}",
      "description": "...",                       # optional, shown with the signal
      "next_steps": "...",                        # optional
      "enabled": true,                            # optional; the shipped default
      "source": "security_event",                 # or "business_event"
      "queries": {                                # name -> filter; every key set must match
        "attempts": {"rule_type": ["sql_injection"], "rule_category": ["attack_attempt"]}
      },
      "group_by": ["service", "env", "client_ip"],
      "window_seconds": 600,
      "cases": [                                  # in order; the first whose every
        {"severity": "medium",                    # condition holds wins
         "when": [{"query": "attempts", "aggregate": "requests", "op": ">=", "value": 100}]},
        {"severity": "low",
         "when": [{"query": "attempts", "aggregate": "requests", "op": ">=", "value": 10}]}
      ]
    }

Filters of `security_event` queries (traces.models.SecurityEvent):
  `rule_type`, `rule_id`, `rule_category`, `source` (tracer|console): lists, the event's value
  is one of them; `tool`: bool, the matching rule named the tool (`rule_tags.tool_name`);
  `status_code`: {"min": int, "max": int, "not_in": [int]}, any of the three, an event without
  a status never matches; `blocked`: bool; `route`: bool, the request has a route (the
  framework matched it, so the path exists).
Filters of `business_event` queries (traces.models.BusinessLogicEvent):
  `kind` (login_success|login_failure|signup|custom), `name`: lists; `user_exists`: bool.
An empty filter `{}` matches every event of the source.

Group-by fields: `service`, `env`, `client_ip`, `user` (of business events: the login, else
the user id), and for security events `route`, `rule_id`, `rule_type`. An event whose
`client_ip`, `user` or `route` is empty does not count toward a rule grouping by that field: an
attack by nobody in particular cannot be attributed.

Aggregates, over the events of one group that match the condition's query, in the window of
`window_seconds` that ends at the group's newest new event (start excluded, end included):
`count` (events: one request can match several detection rules), `requests` (distinct
requests), `distinct:<field>` (distinct values of a group-by field, or of `tool`).
`op` is one of >=, >, <=, <, ==; `value` a non-negative integer.

The title is a template of the group-by fields (`{service}`, `{client_ip}`...); nothing else can
be interpolated, which keeps a custom rule from reaching into Python objects.
"""

from __future__ import annotations

import json
import logging
import re
import string
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from django.db.models import Count, Q

from signals.models import Severity, Signal, SignalRule

logger = logging.getLogger(__name__)

BUILTIN_RULES_PATH = Path(__file__).resolve().parent / "rules" / "signal_rules.json"

SECURITY_EVENT = "security_event"
BUSINESS_EVENT = "business_event"
SOURCES = (SECURITY_EVENT, BUSINESS_EVENT)

GROUP_FIELDS = {
    SECURITY_EVENT: ("service", "env", "client_ip", "user", "route", "rule_id", "rule_type"),
    BUSINESS_EVENT: ("service", "env", "client_ip", "user"),
}
# Fields whose empty value cannot be grouped on (see the docstring).
ATTRIBUTION_FIELDS = frozenset({"client_ip", "user", "route"})
DISTINCT_EXTRA = {SECURITY_EVENT: ("tool",), BUSINESS_EVENT: ()}

LIST_FILTERS = {
    SECURITY_EVENT: ("rule_type", "rule_id", "rule_category", "source"),
    BUSINESS_EVENT: ("kind", "name"),
}
BOOL_FILTERS = {SECURITY_EVENT: ("tool", "blocked", "route"), BUSINESS_EVENT: ("user_exists",)}
STATUS_KEYS = ("min", "max", "not_in")

OPS = (">=", ">", "<=", "<", "==")
MAX_WINDOW_SECONDS = 7 * 24 * 3600
ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,99}")
TOP_KEYS = frozenset(
    {
        "id",
        "name",
        "title",
        "description",
        "next_steps",
        "enabled",
        "source",
        "queries",
        "group_by",
        "window_seconds",
        "cases",
    }
)


class SignalRuleError(ValueError):
    """A rule that cannot be used; the message names the rule and the field."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Condition:
    query: str
    aggregate: str  # "count", "requests" or "distinct:<field>"
    op: str
    value: int

    def holds(self, measured: int) -> bool:
        return {
            ">=": measured >= self.value,
            ">": measured > self.value,
            "<=": measured <= self.value,
            "<": measured < self.value,
            "==": measured == self.value,
        }[self.op]


@dataclass(frozen=True, slots=True)
class Case:
    severity: str
    when: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class SignalRuleDef:
    id: str
    name: str
    title: str
    description: str
    next_steps: str
    enabled: bool
    source: str
    queries: dict[str, dict[str, Any]]
    group_by: tuple[str, ...]
    window_seconds: int
    cases: tuple[Case, ...]

    @property
    def aggregates(self) -> list[tuple[str, str]]:
        """The (query, aggregate) pairs the cases read, each once, in a stable order."""
        seen: dict[tuple[str, str], None] = {}
        for case in self.cases:
            for condition in case.when:
                seen[(condition.query, condition.aggregate)] = None
        return list(seen)

    def severity_for(self, measures: dict[tuple[str, str], int]) -> str | None:
        """The severity of the first case whose every condition holds, or None."""
        for case in self.cases:
            if all(c.holds(measures.get((c.query, c.aggregate), 0)) for c in case.when):
                return case.severity
        return None

    def title_for(self, group: dict[str, Any]) -> str:
        values = {field: "" if group.get(field) is None else str(group[field]) for field in group}
        return self.title.format_map(values)[:300]

    def as_definition(self) -> dict[str, Any]:
        """The rule as its normalised JSON document."""
        return {
            "id": self.id,
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "next_steps": self.next_steps,
            "enabled": self.enabled,
            "source": self.source,
            "queries": self.queries,
            "group_by": list(self.group_by),
            "window_seconds": self.window_seconds,
            "cases": [
                {
                    "severity": case.severity,
                    "when": [
                        {"query": c.query, "aggregate": c.aggregate, "op": c.op, "value": c.value}
                        for c in case.when
                    ],
                }
                for case in self.cases
            ],
        }


class _Parser:
    def __init__(self, raw: Any) -> None:
        self.rule_id = raw.get("id") if isinstance(raw, dict) else None

    def error(self, field: str, message: str) -> SignalRuleError:
        name = self.rule_id if isinstance(self.rule_id, str) else "?"
        return SignalRuleError(f"signal rule {name!r}: {field}: {message}", field=field)

    def text(self, raw: dict[str, Any], field: str, *, required: bool, limit: int) -> str:
        value = raw.get(field, None if required else "")
        if not isinstance(value, str) or (required and not value.strip()):
            raise self.error(field, "required, a non-empty string" if required else "a string")
        if len(value) > limit:
            raise self.error(field, f"at most {limit} characters")
        return value

    def integer(self, value: Any, field: str, *, minimum: int, maximum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(field, "an integer")
        if not minimum <= value <= maximum:
            raise self.error(field, f"between {minimum} and {maximum}")
        return value

    def string_list(self, value: Any, field: str) -> list[str]:
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(item, str) and item for item in value)
        ):
            raise self.error(field, "a non-empty list of non-empty strings")
        return list(value)

    def query(self, source: str, name: str, raw: Any) -> dict[str, Any]:
        field = f"queries.{name}"
        if not isinstance(raw, dict):
            raise self.error(field, "an object of filters")
        parsed: dict[str, Any] = {}
        for key, value in raw.items():
            if key in LIST_FILTERS[source]:
                parsed[key] = self.string_list(value, f"{field}.{key}")
            elif key in BOOL_FILTERS[source]:
                if not isinstance(value, bool):
                    raise self.error(f"{field}.{key}", "true or false")
                parsed[key] = value
            elif key == "status_code" and source == SECURITY_EVENT:
                parsed[key] = self.status_code(value, f"{field}.{key}")
            else:
                known = [*LIST_FILTERS[source], *BOOL_FILTERS[source]]
                if source == SECURITY_EVENT:
                    known.append("status_code")
                raise self.error(
                    f"{field}.{key}",
                    f"unknown filter for {source} queries (known: {', '.join(known)})",
                )
        return parsed

    def status_code(self, value: Any, field: str) -> dict[str, Any]:
        if not isinstance(value, dict) or not value or set(value) - set(STATUS_KEYS):
            raise self.error(field, "an object with any of min, max, not_in")
        parsed: dict[str, Any] = {}
        for key in ("min", "max"):
            if key in value:
                parsed[key] = self.integer(value[key], f"{field}.{key}", minimum=100, maximum=599)
        if "min" in parsed and "max" in parsed and parsed["min"] > parsed["max"]:
            raise self.error(field, "min is above max")
        if "not_in" in value:
            codes = value["not_in"]
            if not isinstance(codes, list) or not codes:
                raise self.error(f"{field}.not_in", "a non-empty list of status codes")
            parsed["not_in"] = [
                self.integer(code, f"{field}.not_in", minimum=100, maximum=599) for code in codes
            ]
        return parsed

    def condition(
        self, raw: Any, field: str, queries: dict[str, Any], source: str, group_by: tuple[str, ...]
    ) -> Condition:
        if not isinstance(raw, dict) or set(raw) - {"query", "aggregate", "op", "value"}:
            raise self.error(field, "an object with query, aggregate, op and value")
        query = raw.get("query")
        if query not in queries:
            raise self.error(f"{field}.query", f"not one of the rule's queries ({query!r})")
        aggregate = raw.get("aggregate", "count")
        distinct_fields = (*GROUP_FIELDS[source], *DISTINCT_EXTRA[source])
        if not isinstance(aggregate, str) or not (
            aggregate in ("count", "requests")
            or (aggregate.startswith("distinct:") and aggregate[9:] in distinct_fields)
        ):
            raise self.error(
                f"{field}.aggregate",
                "count, requests or distinct:<field> with field one of "
                + ", ".join(distinct_fields),
            )
        op = raw.get("op", ">=")
        if op not in OPS:
            raise self.error(f"{field}.op", f"one of {', '.join(OPS)}")
        value = self.integer(raw.get("value"), f"{field}.value", minimum=0, maximum=10**9)
        return Condition(query=query, aggregate=aggregate, op=op, value=value)

    def parse(self, raw: Any) -> SignalRuleDef:
        if not isinstance(raw, dict):
            raise SignalRuleError("signal rule: a JSON object")
        if not isinstance(self.rule_id, str) or not ID_PATTERN.fullmatch(self.rule_id):
            raise self.error(
                "id", "required, lowercase letters, digits, '.', '_' or '-', at most 100"
            )
        unknown = set(raw) - TOP_KEYS
        if unknown:
            raise self.error(sorted(unknown)[0], "unknown field")
        name = self.text(raw, "name", required=True, limit=200)
        title = self.text(raw, "title", required=True, limit=300)
        description = self.text(raw, "description", required=False, limit=5000)
        next_steps = self.text(raw, "next_steps", required=False, limit=5000)
        enabled = raw.get("enabled", True)
        if not isinstance(enabled, bool):
            raise self.error("enabled", "true or false")
        source = raw.get("source")
        if source not in SOURCES:
            raise self.error("source", f"one of {', '.join(SOURCES)}")

        raw_queries = raw.get("queries")
        if not isinstance(raw_queries, dict) or not raw_queries:
            raise self.error("queries", "a non-empty object of named filters")
        queries = {}
        for query_name, query in raw_queries.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", query_name):
                raise self.error(f"queries.{query_name}", "names are [a-z][a-z0-9_]*")
            queries[query_name] = self.query(source, query_name, query)

        raw_group = raw.get("group_by")
        if not isinstance(raw_group, list) or not raw_group:
            raise self.error("group_by", "a non-empty list of fields")
        for field in raw_group:
            if field not in GROUP_FIELDS[source]:
                raise self.error(
                    "group_by",
                    f"{field!r} is not one of {', '.join(GROUP_FIELDS[source])}",
                )
        if len(set(raw_group)) != len(raw_group):
            raise self.error("group_by", "a field is listed twice")
        group_by = tuple(raw_group)

        window = self.integer(
            raw.get("window_seconds"), "window_seconds", minimum=1, maximum=MAX_WINDOW_SECONDS
        )

        self.check_title(title, group_by)

        raw_cases = raw.get("cases")
        if not isinstance(raw_cases, list) or not raw_cases:
            raise self.error("cases", "a non-empty list")
        cases = []
        for index, raw_case in enumerate(raw_cases):
            field = f"cases[{index}]"
            if not isinstance(raw_case, dict) or set(raw_case) != {"severity", "when"}:
                raise self.error(field, "an object with severity and when")
            if raw_case["severity"] not in Severity.values:
                raise self.error(f"{field}.severity", f"one of {', '.join(Severity.values)}")
            when = raw_case["when"]
            if not isinstance(when, list) or not when:
                raise self.error(f"{field}.when", "a non-empty list of conditions")
            cases.append(
                Case(
                    severity=raw_case["severity"],
                    when=tuple(
                        self.condition(c, f"{field}.when[{i}]", queries, source, group_by)
                        for i, c in enumerate(when)
                    ),
                )
            )
        return SignalRuleDef(
            id=self.rule_id,
            name=name,
            title=title,
            description=description,
            next_steps=next_steps,
            enabled=enabled,
            source=source,
            queries=queries,
            group_by=group_by,
            window_seconds=window,
            cases=tuple(cases),
        )

    def check_title(self, title: str, group_by: tuple[str, ...]) -> None:
        try:
            parts = list(string.Formatter().parse(title))
        except ValueError as exc:
            raise self.error("title", f"not a valid template: {exc}") from None
        for _, field, spec, conversion in parts:
            if field is None:
                continue
            if field not in group_by or spec or conversion:
                raise self.error(
                    "title",
                    f"{{{field}}}: templates name group-by fields only ({', '.join(group_by)})",
                )


def parse_signal_rule(raw: Any) -> SignalRuleDef:
    """The rule of a JSON document; SignalRuleError names the rule and the bad field."""
    return _Parser(raw).parse(raw)


def builtin_document() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = json.loads(BUILTIN_RULES_PATH.read_text())["rules"]
    return rules


@cache
def builtin_signal_rules() -> dict[str, SignalRuleDef]:
    """The shipped rules by id. A broken file fails loudly here (its test parses it)."""
    rules = [parse_signal_rule(raw) for raw in builtin_document()]
    return {rule.id: rule for rule in rules}


@dataclass(slots=True)
class RuleState:
    """A rule as the console uses it: its definition and whether it runs."""

    rule: SignalRuleDef
    source: str  # SignalRule.Source
    enabled: bool
    tuned: bool


def signal_rule_states() -> list[RuleState]:
    """Every rule: the built-ins (with a user's switch or tuning applied) and custom rules."""
    rows = {row.rule_id: row for row in SignalRule.objects.all()}
    states = []
    for rule_id, builtin in builtin_signal_rules().items():
        row = rows.get(rule_id)
        rule, tuned = builtin, False
        if row is not None and row.definition is not None:
            try:
                rule, tuned = parse_signal_rule(row.definition), True
            except SignalRuleError:
                # Validated when saved; a tuning that a format change broke falls back to the
                # shipped rule rather than silencing it.
                logger.exception("tuned signal rule %s no longer loads", rule_id)
        enabled = row.enabled if row is not None else builtin.enabled
        states.append(RuleState(rule, SignalRule.Source.BUILTIN, enabled, tuned))
    for row in rows.values():
        if row.source != SignalRule.Source.CUSTOM or row.rule_id in builtin_signal_rules():
            continue
        try:
            rule = parse_signal_rule(row.definition)
        except SignalRuleError:
            logger.exception("custom signal rule %s no longer loads", row.rule_id)
            continue
        states.append(RuleState(rule, SignalRule.Source.CUSTOM, row.enabled, False))
    return states


def active_signal_rules() -> list[SignalRuleDef]:
    """The rules the workers evaluate, built-ins first, each in a stable order."""
    return [state.rule for state in signal_rule_states() if state.enabled]


@dataclass(slots=True)
class SignalRuleRow:
    id: str
    name: str
    source: str
    enabled: bool
    tuned: bool
    open_signals: int
    definition: dict[str, Any]


def signal_rule_list() -> list[SignalRuleRow]:
    """Every rule with its count of signals not archived (open or under review)."""
    open_counts = dict(
        Signal.objects.filter(~Q(status=Signal.Status.ARCHIVED))
        .order_by()
        .values_list("rule_id")
        .annotate(n=Count("pk"))
        .values_list("rule_id", "n")
    )
    return [
        SignalRuleRow(
            id=state.rule.id,
            name=state.rule.name,
            source=state.source,
            enabled=state.enabled,
            tuned=state.tuned,
            open_signals=open_counts.get(state.rule.id, 0),
            definition={**state.rule.as_definition(), "enabled": state.enabled},
        )
        for state in signal_rule_states()
    ]
