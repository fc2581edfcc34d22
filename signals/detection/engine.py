"""Evaluation of detection rules over one request.

Speed comes from scanning, not from trying rules one by one: the regular expressions of all
rules that share a transformer chain are compiled once into one Hyperscan database, and each
transformed request value is scanned once against all of them. Only the expressions Hyperscan
reports are then run in RE2 (linear time too) to extract the matched fragment. Operators that
are not regular expressions (libinjection, detectors, phrase lists) run per value.

A per-request budget bounds the work; a request that overruns it is reported as such.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import hyperscan

from signals.detection.operators import Match, MatchRegex, encode_utf8
from signals.detection.rules import Condition, Input, Rule
from signals.detection.transformers import apply_chain

logger = logging.getLogger(__name__)

MAX_DEPTH = 16
MAX_ITEMS_PER_ADDRESS = 512
MAX_REPORTED_VALUE = 512
DEFAULT_BUDGET_US = 20_000

KeyPath = tuple[str | int, ...]
Item = tuple[KeyPath, str]


@dataclass(slots=True)
class ConditionMatch:
    condition: Condition
    address: str
    key_path: KeyPath
    value: str
    highlight: list[str]

    def as_trigger_match(self) -> dict[str, Any]:
        operator = self.condition.operator
        return {
            "operator": ("!" if self.condition.negated else "") + self.condition.operator_name,
            "operator_value": operator.pattern if isinstance(operator, MatchRegex) else "",
            "parameters": [
                {
                    "address": self.address,
                    "key_path": list(self.key_path),
                    "value": self.value[:MAX_REPORTED_VALUE],
                    "highlight": [h[:MAX_REPORTED_VALUE] for h in self.highlight],
                }
            ],
        }


@dataclass(slots=True)
class RuleMatch:
    rule: Rule
    conditions: list[ConditionMatch]

    def as_trigger(self) -> dict[str, Any]:
        """The match in the format tracers report (`meta_struct.appsec.triggers[]`)."""
        return {
            "rule": {
                "id": self.rule.id,
                "name": self.rule.name,
                "tags": dict(self.rule.tags),
                "on_match": list(self.rule.on_match),
            },
            "rule_matches": [match.as_trigger_match() for match in self.conditions],
        }


@dataclass(slots=True)
class Result:
    matches: list[RuleMatch]
    timed_out: bool
    duration_us: float


def _flatten(value: Any, structure: str) -> list[Item]:
    """Every string in a value with its key path; keys instead of values for keys_only."""
    items: list[Item] = []
    stack: list[tuple[KeyPath, Any, int]] = [((), value, 0)]
    while stack and len(items) < MAX_ITEMS_PER_ADDRESS:
        path, current, depth = stack.pop()
        if isinstance(current, str):
            if structure != "keys_only":
                items.append((path, current))
        elif isinstance(current, Mapping):
            if depth >= MAX_DEPTH:
                continue
            for key, child in reversed(list(current.items())[:MAX_ITEMS_PER_ADDRESS]):
                if structure == "keys_only":
                    items.append(((*path, str(key)), str(key)))
                stack.append(((*path, str(key)), child, depth + 1))
        elif isinstance(current, (list, tuple)):
            if depth >= MAX_DEPTH:
                continue
            for index in reversed(range(min(len(current), MAX_ITEMS_PER_ADDRESS))):
                stack.append(((*path, index), current[index], depth + 1))
        elif (
            isinstance(current, (int, float))
            and not isinstance(current, bool)
            and structure != "keys_only"
        ):
            items.append((path, str(current)))
    return items


class _Prefilter:
    """One Hyperscan database for the regular expressions of one transformer chain."""

    def __init__(self, conditions: list[tuple[int, MatchRegex]]) -> None:
        self.database: hyperscan.Database | None = None
        self.unscanned: set[int] = set()
        expressions, ids, flags = [], [], []
        self._local = threading.local()
        for cond_id, operator in conditions:
            pattern = operator.pattern.encode()
            flag = (
                operator.hyperscan_flags
                | hyperscan.HS_FLAG_SINGLEMATCH
                | hyperscan.HS_FLAG_ALLOWEMPTY
            )
            for candidate in (flag, flag | hyperscan.HS_FLAG_PREFILTER):
                try:
                    probe = hyperscan.Database()
                    probe.compile(
                        expressions=[pattern], ids=[cond_id], elements=1, flags=[candidate]
                    )
                except hyperscan.error:
                    continue
                expressions.append(pattern)
                ids.append(cond_id)
                flags.append(candidate)
                break
            else:
                # RE2 accepts it but Hyperscan cannot even approximate it: run it in RE2.
                self.unscanned.add(cond_id)
        if expressions:
            self.database = hyperscan.Database()
            self.database.compile(
                expressions=expressions, ids=ids, elements=len(expressions), flags=flags
            )

    def scan(self, text: str) -> set[int]:
        hits: set[int] = set()
        if self.database is None or not text:
            return hits

        def on_match(cond_id: int, start: int, end: int, flags: int, context: Any) -> None:
            hits.add(cond_id)

        # Scratch space is per thread: scans release the GIL and must not share it.
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = hyperscan.Scratch(self.database)
        self.database.scan(encode_utf8(text), match_event_handler=on_match, scratch=scratch)
        return hits


@dataclass(slots=True)
class _Context:
    addresses: Mapping[str, Any]
    items: dict[tuple[str, str], list[Item]] = field(default_factory=dict)
    transformed: dict[tuple[str, str, tuple[str, ...]], list[Item]] = field(default_factory=dict)
    hits: dict[tuple[str, str, tuple[str, ...]], list[set[int]]] = field(default_factory=dict)


class Engine:
    """Compiled rules. Build once (it compiles every expression), then `run` per request."""

    def __init__(self, rules: list[Rule], *, budget_us: int = DEFAULT_BUDGET_US) -> None:
        self.rules = rules
        self.budget_us = budget_us
        self._cond_ids: dict[int, int] = {}
        self._prefilters: dict[tuple[str, ...], _Prefilter] = {}
        by_chain: dict[tuple[str, ...], list[tuple[int, MatchRegex]]] = {}
        for rule in rules:
            for condition in rule.conditions:
                if isinstance(condition.operator, MatchRegex) and not condition.negated:
                    cond_id = len(self._cond_ids)
                    self._cond_ids[id(condition)] = cond_id
                    by_chain.setdefault(rule.transformers, []).append((cond_id, condition.operator))
        for chain, conditions in by_chain.items():
            self._prefilters[chain] = _Prefilter(conditions)

    # --- values --------------------------------------------------------------------------

    def _items(self, ctx: _Context, address: str, structure: str) -> list[Item]:
        key = (address, structure)
        if key not in ctx.items:
            value = ctx.addresses.get(address)
            ctx.items[key] = [] if value is None else _flatten(value, structure)
        return ctx.items[key]

    def _transformed(
        self, ctx: _Context, address: str, structure: str, chain: tuple[str, ...]
    ) -> list[Item]:
        key = (address, structure, chain)
        if key not in ctx.transformed:
            ctx.transformed[key] = [
                (path, apply_chain(value, chain))
                for path, value in self._items(ctx, address, structure)
            ]
        return ctx.transformed[key]

    def _hits(
        self, ctx: _Context, address: str, structure: str, chain: tuple[str, ...]
    ) -> list[set[int]]:
        key = (address, structure, chain)
        if key not in ctx.hits:
            prefilter = self._prefilters[chain]
            ctx.hits[key] = [
                prefilter.scan(value)
                for _, value in self._transformed(ctx, address, structure, chain)
            ]
        return ctx.hits[key]

    @staticmethod
    def _selected(input_: Input, path: KeyPath) -> bool:
        wanted = input_.key_path
        return len(path) >= len(wanted) and all(
            str(a) == str(b) for a, b in zip(path, wanted, strict=False)
        )

    # --- conditions ------------------------------------------------------------------------

    def _candidates(
        self, ctx: _Context, rule: Rule, condition: Condition
    ) -> Iterator[tuple[Input, KeyPath, str]]:
        cond_id = self._cond_ids.get(id(condition))
        prefilter = self._prefilters.get(rule.transformers)
        for input_ in condition.inputs:
            values = self._transformed(ctx, input_.address, rule.structure, rule.transformers)
            if cond_id is not None and prefilter is not None and cond_id not in prefilter.unscanned:
                hits = self._hits(ctx, input_.address, rule.structure, rule.transformers)
                for (path, value), hit in zip(values, hits, strict=True):
                    if cond_id in hit and self._selected(input_, path):
                        yield input_, path, value
            else:
                for path, value in values:
                    if self._selected(input_, path):
                        yield input_, path, value

    def _condition(self, ctx: _Context, rule: Rule, condition: Condition) -> ConditionMatch | None:
        for input_, path, value in self._candidates(ctx, rule, condition):
            match: Match | None = condition.operator(value)
            if condition.negated:
                if match is None:
                    return ConditionMatch(condition, input_.address, path, value, [])
            elif match is not None:
                return ConditionMatch(condition, input_.address, path, match.value, match.highlight)
        return None

    def run(self, addresses: Mapping[str, Any], *, budget_us: int | None = None) -> Result:
        started = time.perf_counter()
        budget = (budget_us or self.budget_us) / 1e6
        ctx = _Context(addresses)
        matches: list[RuleMatch] = []
        timed_out = False
        for rule in self.rules:
            if time.perf_counter() - started > budget:
                timed_out = True
                break
            found = []
            for condition in rule.conditions:
                match = self._condition(ctx, rule, condition)
                if match is None:
                    break
                found.append(match)
            else:
                matches.append(RuleMatch(rule, found))
        return Result(matches, timed_out, (time.perf_counter() - started) * 1e6)
