"""Evaluation of detection rules over one request.

Speed comes from scanning, not from trying rules one by one: the regular expressions of all
rules that share a transformer chain are compiled once into one Hyperscan database, and each
transformed request value is scanned once against all of them. A rule with such an expression
is skipped outright when Hyperscan found it in none of the rule's inputs; otherwise RE2 (linear
time too) runs only on the values Hyperscan reported, to confirm and extract the fragment.
Operators that are not regular expressions (libinjection, detectors, phrase lists) run per
value.

Compiling a database takes seconds, so compiled databases are kept in memory for the process
and, when the engine is given a cache directory, serialized there: the next process (another
worker, or this one after a restart) loads them in milliseconds.

A per-request budget bounds the work; a request that overruns it is reported as such.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
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

# Compiled databases kept per process (one per transformer chain of each rule set built
# recently: enabling and disabling rules moves between a few sets) and per cache directory.
MEMORY_CACHE_ENTRIES = 32
DISK_CACHE_ENTRIES = 64

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


def _flatten(value: Any, structure: str, path: KeyPath = (), depth: int = 0) -> list[Item]:
    """Every string in a value with its key path; keys instead of values for keys_only."""
    keys_only = structure == "keys_only"
    if isinstance(value, str):  # most addresses: the method, the URI, a header
        return [] if keys_only else [(path, value)]
    items: list[Item] = []
    stack: list[tuple[KeyPath, Any, int]] = [(path, value, depth)]
    while stack and len(items) < MAX_ITEMS_PER_ADDRESS:
        path, current, depth = stack.pop()
        if isinstance(current, str):
            if not keys_only:
                items.append((path, current))
        elif isinstance(current, Mapping):
            if depth >= MAX_DEPTH:
                continue
            for key, child in reversed(list(islice(current.items(), MAX_ITEMS_PER_ADDRESS))):
                name = str(key)
                child_path = (*path, name)
                if keys_only:
                    items.append((child_path, name))
                stack.append((child_path, child, depth + 1))
        elif isinstance(current, (list, tuple)):
            if depth >= MAX_DEPTH:
                continue
            for index in reversed(range(min(len(current), MAX_ITEMS_PER_ADDRESS))):
                stack.append(((*path, index), current[index], depth + 1))
        elif isinstance(current, (int, float)) and not isinstance(current, bool) and not keys_only:
            items.append((path, str(current)))
    return items


_MISSING = object()


def _select(value: Any, key_path: KeyPath, structure: str) -> list[Item]:
    """The items under ``key_path`` (keys compared as strings, as ``_flatten`` reports them),
    found by looking the keys up rather than by flattening the whole value: a rule that reads
    one header must not pay for all of them. The item limit counts from the selected value."""
    path: list[str | int] = []
    current = value
    in_mapping = False
    for depth, wanted in enumerate(key_path):
        if depth >= MAX_DEPTH:
            return []
        text = str(wanted)
        if isinstance(current, Mapping):
            child = current.get(text, _MISSING)
            if child is _MISSING and not isinstance(wanted, str):
                child = current.get(wanted, _MISSING)
            if child is _MISSING:
                return []
            path.append(text)
            in_mapping = True
        elif isinstance(current, (list, tuple)):
            if not (text.isascii() and text.isdigit()) or str(int(text)) != text:
                return []
            index = int(text)
            if index >= min(len(current), MAX_ITEMS_PER_ADDRESS):
                return []
            child = current[index]
            path.append(index)
            in_mapping = False
        else:
            return []
        current = child
    prefix = tuple(path)
    items = _flatten(current, structure, prefix, len(prefix))
    if structure == "keys_only" and in_mapping:
        # The selected key is itself a key under the path's parent, reported before its own.
        items.insert(0, (prefix, str(prefix[-1])))
    return items


# --- compiled databases ----------------------------------------------------------------------

_CACHE_MAGIC = b"asm-hyperscan-cache-1\n"
_memory_cache: OrderedDict[str, tuple[hyperscan.Database, frozenset[int]]] = OrderedDict()
_memory_lock = threading.Lock()


def _cache_key(patterns: list[bytes], flags: list[int]) -> str:
    """What a database depends on: its expressions and flags in order, the Hyperscan build and
    the machine (a database compiled for one CPU family does not load on another)."""
    digest = hashlib.sha256()
    header = [getattr(hyperscan, "__version__", ""), platform.machine(), len(patterns)]
    digest.update(json.dumps(header).encode())
    for pattern, flag in zip(patterns, flags, strict=True):
        digest.update(b"\0%d\0%d\0" % (flag, len(pattern)))
        digest.update(pattern)
    return digest.hexdigest()


def _compile(patterns: list[bytes], flags: list[int]) -> tuple[hyperscan.Database | None, set[int]]:
    """One database for all expressions, and the ids of those it could not take."""
    ids = list(range(len(patterns)))
    database = hyperscan.Database()
    try:
        database.compile(expressions=patterns, ids=ids, elements=len(patterns), flags=flags)
        return database, set()
    except hyperscan.error:
        pass  # an expression needs HS_FLAG_PREFILTER, or Hyperscan has no equivalent at all
    kept: list[int] = []
    kept_flags: list[int] = []
    unscanned: set[int] = set()
    for expression, pattern, flag in zip(ids, patterns, flags, strict=True):
        for candidate in (flag, flag | hyperscan.HS_FLAG_PREFILTER):
            try:
                probe = hyperscan.Database()
                probe.compile(
                    expressions=[pattern], ids=[expression], elements=1, flags=[candidate]
                )
            except hyperscan.error:
                continue
            kept.append(expression)
            kept_flags.append(candidate)
            break
        else:
            # RE2 accepts it but Hyperscan cannot even approximate it: run it in RE2.
            unscanned.add(expression)
    if not kept:
        return None, unscanned
    database = hyperscan.Database()
    database.compile(
        expressions=[patterns[i] for i in kept], ids=kept, elements=len(kept), flags=kept_flags
    )
    return database, unscanned


def _read_cached(path: Path, key: str) -> tuple[hyperscan.Database, frozenset[int]] | None:
    """A database serialized by `_write_cached`, or None if absent, damaged or not loadable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        logger.warning("detection cache %s cannot be read; compiling", path, exc_info=True)
        return None
    try:
        if not data.startswith(_CACHE_MAGIC):
            raise ValueError("not a detection cache file")
        checksum = data[len(_CACHE_MAGIC) : len(_CACHE_MAGIC) + 32]
        body = data[len(_CACHE_MAGIC) + 32 :]
        if hashlib.sha256(body).digest() != checksum:
            raise ValueError("checksum mismatch")
        size = int.from_bytes(body[:4], "big")
        meta = json.loads(body[4 : 4 + size])
        if meta.get("key") != key:
            raise ValueError("written for other expressions")
        database = hyperscan.loadb(body[4 + size :], hyperscan.HS_MODE_BLOCK)
        # Allocating scratch validates the database for this CPU and library.
        hyperscan.Scratch(database)
        return database, frozenset(int(i) for i in meta["unscanned"])
    except (ValueError, KeyError, TypeError, hyperscan.error) as error:
        logger.warning("detection cache %s is unusable (%s); compiling again", path, error)
        return None


def _write_cached(
    directory: Path, key: str, database: hyperscan.Database, unscanned: frozenset[int]
) -> None:
    meta = json.dumps({"key": key, "unscanned": sorted(unscanned)}).encode()
    body = len(meta).to_bytes(4, "big") + meta + hyperscan.dumpb(database)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed: a worker starting meanwhile never reads half a file.
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
        with os.fdopen(handle, "wb") as file:
            file.write(_CACHE_MAGIC + hashlib.sha256(body).digest() + body)
        os.replace(temporary, directory / f"{key}.hsdb")
        stale = sorted(directory.glob("*.hsdb"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in stale[DISK_CACHE_ENTRIES:]:
            old.unlink(missing_ok=True)
    except OSError:
        # Detection works without the cache; the next process compiles again.
        logger.warning("detection cache %s cannot be written", directory, exc_info=True)


def _database(
    patterns: list[bytes], flags: list[int], cache_dir: Path | None
) -> tuple[hyperscan.Database | None, frozenset[int]]:
    """The compiled database for these expressions: from memory, the cache directory, or
    compiled (seconds for a full rule set) and then cached in both."""
    if not patterns:
        return None, frozenset()
    key = _cache_key(patterns, flags)
    with _memory_lock:
        cached = _memory_cache.get(key)
        if cached is not None:
            _memory_cache.move_to_end(key)
            return cached
    path = cache_dir / f"{key}.hsdb" if cache_dir is not None else None
    loaded = _read_cached(path, key) if path is not None else None
    if loaded is not None:
        database, unscanned = loaded
    else:
        compiled, unscanned_ids = _compile(patterns, flags)
        unscanned = frozenset(unscanned_ids)
        if compiled is None:
            return None, unscanned
        database = compiled
        if cache_dir is not None:
            _write_cached(cache_dir, key, database, unscanned)
    with _memory_lock:
        _memory_cache[key] = (database, unscanned)
        while len(_memory_cache) > MEMORY_CACHE_ENTRIES:
            _memory_cache.popitem(last=False)
    return database, unscanned


class _Prefilter:
    """One Hyperscan database for the regular expressions of one transformer chain; an
    expression's id is its position in the list given."""

    def __init__(self, operators: list[MatchRegex], *, cache_dir: Path | None = None) -> None:
        patterns = [operator.pattern.encode() for operator in operators]
        flags = [
            operator.hyperscan_flags | hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_ALLOWEMPTY
            for operator in operators
        ]
        self.database, self.unscanned = _database(patterns, flags, cache_dir)
        self._local = threading.local()

    def scan(self, values: list[Item]) -> dict[int, list[int]]:
        """Which expressions each value may match: expression id -> positions in ``values``."""
        found: dict[int, list[int]] = {}
        database = self.database
        if database is None:
            return found
        # Scratch space is per thread: scans release the GIL and must not share it.
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = hyperscan.Scratch(database)
        position = 0

        def on_match(expression: int, start: int, end: int, flags: int, context: Any) -> None:
            # HS_FLAG_SINGLEMATCH: one call per expression and value.
            positions = found.get(expression)
            if positions is None:
                found[expression] = [position]
            else:
                positions.append(position)

        for position, (_, text) in enumerate(values):  # noqa: B007 (read by on_match)
            if text:
                database.scan(encode_utf8(text), match_event_handler=on_match, scratch=scratch)
        return found


# --- evaluation plan -------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class _ConditionPlan:
    condition: Condition
    # Each input with the index of the transformed values it reads.
    inputs: tuple[tuple[Input, int], ...]
    # The condition's id in its chain's database, when Hyperscan prefilters it.
    expression: int | None


@dataclass(slots=True, frozen=True)
class _RulePlan:
    rule: Rule
    conditions: tuple[_ConditionPlan, ...]
    # How many of its conditions Hyperscan must report before the rule is worth evaluating.
    gates: int


@dataclass(slots=True, frozen=True)
class _Group:
    """The values of one input (address, key path, structure) after one transformer chain."""

    source: int
    chain: tuple[str, ...]
    prefilter: _Prefilter | None


class _Context:
    """One request's values, each computed at most once, and only for addresses it has."""

    __slots__ = ("addresses", "hits", "items", "values")

    def __init__(self, addresses: Mapping[str, Any], sources: int, groups: int) -> None:
        self.addresses = addresses
        self.items: list[list[Item] | None] = [None] * sources
        self.values: list[list[Item] | None] = [None] * groups
        self.hits: list[dict[int, list[int]] | None] = [None] * groups


class Engine:
    """Compiled rules. Build once (it compiles every expression), then `run` per request.

    Engines built from the same expressions in one process share the compiled databases; with
    ``cache_dir`` they are also serialized there, for the next process to load.
    """

    def __init__(
        self,
        rules: list[Rule],
        *,
        budget_us: int = DEFAULT_BUDGET_US,
        cache_dir: Path | None = None,
    ) -> None:
        self.rules = rules
        self.budget_us = budget_us
        by_chain: dict[tuple[str, ...], list[MatchRegex]] = {}
        expressions: dict[int, int] = {}  # id(condition) -> position in its chain's list
        for rule in rules:
            for condition in rule.conditions:
                if isinstance(condition.operator, MatchRegex) and not condition.negated:
                    chain = by_chain.setdefault(rule.transformers, [])
                    expressions[id(condition)] = len(chain)
                    chain.append(condition.operator)
        self._prefilters = {
            chain: _Prefilter(operators, cache_dir=cache_dir)
            for chain, operators in by_chain.items()
        }
        # Inputs are numbered at build time so that a request's values sit in plain lists.
        self._sources: list[tuple[str, str, KeyPath]] = []
        self._source_ids: dict[tuple[str, str, KeyPath], int] = {}
        self._groups: list[_Group] = []
        self._group_ids: dict[tuple[int, tuple[str, ...]], int] = {}
        # Per group scanned by Hyperscan: expression -> (rule index, condition's gate number).
        self._gates: dict[int, dict[int, tuple[int, int]]] = {}
        # The same by address, so that a request is scanned only for the addresses it has.
        self._gates_by_address: dict[str, list[tuple[int, dict[int, tuple[int, int]]]]] = {}
        self._plans = [self._plan(index, rule, expressions) for index, rule in enumerate(rules)]
        for group, gates in self._gates.items():
            address = self._sources[self._groups[group].source][0]
            self._gates_by_address.setdefault(address, []).append((group, gates))
        # Rules that Hyperscan cannot rule out (no prefiltered expression) are always evaluated.
        self._ungated = tuple(index for index, plan in enumerate(self._plans) if not plan.gates)

    def _group(self, input_: Input, rule: Rule) -> int:
        source_key = (input_.address, rule.structure, input_.key_path)
        source = self._source_ids.setdefault(source_key, len(self._source_ids))
        if source == len(self._sources):
            self._sources.append(source_key)
        group_key = (source, rule.transformers)
        group = self._group_ids.setdefault(group_key, len(self._group_ids))
        if group == len(self._groups):
            prefilter = self._prefilters.get(rule.transformers)
            self._groups.append(_Group(source, rule.transformers, prefilter))
        return group

    def _plan(self, index: int, rule: Rule, expressions: dict[int, int]) -> _RulePlan:
        conditions = []
        gates = 0
        prefilter = self._prefilters.get(rule.transformers)
        for condition in rule.conditions:
            inputs = tuple((input_, self._group(input_, rule)) for input_ in condition.inputs)
            expression = expressions.get(id(condition))
            if expression is not None and (prefilter is None or expression in prefilter.unscanned):
                expression = None
            if expression is not None:
                for _, group in inputs:
                    self._gates.setdefault(group, {})[expression] = (index, gates)
                gates += 1
            conditions.append(_ConditionPlan(condition, inputs, expression))
        return _RulePlan(rule, tuple(conditions), gates)

    # --- values --------------------------------------------------------------------------

    def _items(self, ctx: _Context, source: int) -> list[Item]:
        items = ctx.items[source]
        if items is None:
            address, structure, key_path = self._sources[source]
            value = ctx.addresses.get(address)
            if value is None:
                items = []
            elif key_path:
                items = _select(value, key_path, structure)
            else:
                items = _flatten(value, structure)
            ctx.items[source] = items
        return items

    def _values(self, ctx: _Context, group: int) -> list[Item]:
        values = ctx.values[group]
        if values is None:
            spec = self._groups[group]
            chain = spec.chain
            values = ctx.values[group] = [
                (path, apply_chain(value, chain)) for path, value in self._items(ctx, spec.source)
            ]
        return values

    def _hits(self, ctx: _Context, group: int) -> dict[int, list[int]]:
        hits = ctx.hits[group]
        if hits is None:
            prefilter = self._groups[group].prefilter
            values = self._values(ctx, group)
            hits = ctx.hits[group] = prefilter.scan(values) if prefilter and values else {}
        return hits

    # --- rules ---------------------------------------------------------------------------

    def _condition(self, ctx: _Context, plan: _ConditionPlan) -> ConditionMatch | None:
        condition = plan.condition
        operator = condition.operator
        expression = plan.expression
        for input_, group in plan.inputs:
            values = self._values(ctx, group)
            if not values:
                continue
            if expression is not None:
                for position in self._hits(ctx, group).get(expression, ()):
                    path, value = values[position]
                    found = operator(value)
                    if found is not None:
                        return ConditionMatch(
                            condition, input_.address, path, found.value, found.highlight
                        )
                continue
            for path, value in values:
                match: Match | None = operator(value)
                if condition.negated:
                    if match is None:
                        return ConditionMatch(condition, input_.address, path, value, [])
                elif match is not None:
                    return ConditionMatch(
                        condition, input_.address, path, match.value, match.highlight
                    )
        return None

    def run(self, addresses: Mapping[str, Any], *, budget_us: int | None = None) -> Result:
        clock = time.perf_counter
        started = clock()
        deadline = started + (budget_us or self.budget_us) / 1e6
        ctx = _Context(addresses, len(self._sources), len(self._groups))
        matches: list[RuleMatch] = []
        timed_out = False
        # First every input once through Hyperscan: a rule is evaluated only if each of its
        # prefiltered expressions was reported in one of the inputs it reads.
        reported: set[tuple[int, int]] = set()
        for address in addresses:
            for group, gates in self._gates_by_address.get(address, ()):
                if clock() > deadline:
                    return Result(matches, True, (clock() - started) * 1e6)
                for expression in self._hits(ctx, group):
                    gate = gates.get(expression)
                    if gate is not None:
                        reported.add(gate)
        if reported:
            plans = self._plans
            passed: dict[int, int] = {}
            for index, _ in reported:
                passed[index] = passed.get(index, 0) + 1
            candidates: Sequence[int] = sorted(
                [*self._ungated, *(i for i, n in passed.items() if n == plans[i].gates)]
            )
        else:
            candidates = self._ungated
        for index in candidates:
            if clock() > deadline:
                timed_out = True
                break
            plan = self._plans[index]
            found = []
            for condition in plan.conditions:
                match = self._condition(ctx, condition)
                if match is None:
                    break
                found.append(match)
            else:
                matches.append(RuleMatch(plan.rule, found))
        return Result(matches, timed_out, (clock() - started) * 1e6)
