"""The engine the workers use: the shipped rules, custom rules, and who switched what off."""

from __future__ import annotations

import json
import logging
import threading
from functools import cache
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import Count, Max

from signals.detection.engine import Engine
from signals.detection.rules import Rule, parse_rule, parse_rule_file
from signals.models import DetectionRule

logger = logging.getLogger(__name__)

DEFAULT_RULES_PATH = Path(__file__).resolve().parent.parent / "rules" / "default.json"

# Guards `_engine` only, for an instant: callers whose engine is current never wait for a
# compile.
_lock = threading.Lock()
# One compile at a time in this process: threads that find the engine stale wait for that
# build instead of each compiling the same expressions.
_build_lock = threading.Lock()
_engine: tuple[Any, Engine] | None = None


def hyperscan_cache_dir() -> Path:
    """Where compiled Hyperscan databases are kept, so that a worker process starting after
    another loads them instead of compiling them again (seconds for the shipped rules)."""
    return Path(settings.DATA_DIR) / "cache" / "hyperscan"


@cache
def builtin_rules() -> list[Rule]:
    return parse_rule_file(json.loads(DEFAULT_RULES_PATH.read_text()))


def builtin_definitions() -> dict[str, dict[str, Any]]:
    document = json.loads(DEFAULT_RULES_PATH.read_text())
    return {raw["id"]: raw for raw in document["rules"]}


def active_rules() -> list[Rule]:
    states = {row.rule_id: row for row in DetectionRule.objects.all()}
    rules = [rule for rule in builtin_rules() if getattr(states.get(rule.id), "enabled", True)]
    for row in states.values():
        if row.source == DetectionRule.Source.CUSTOM and row.enabled and row.definition:
            try:
                rules.append(parse_rule(row.definition))
            except ValueError:
                # Validated when saved; a rule made invalid by an engine change is skipped
                # rather than stopping detection for every other rule.
                logger.exception("custom rule %s no longer loads", row.rule_id)
    return rules


def _installed(version: Any) -> Engine | None:
    with _lock:
        if _engine is not None and _engine[0] == version:
            return _engine[1]
    return None


def current_engine() -> Engine:
    """The compiled engine, rebuilt when a rule was added, changed or switched."""
    global _engine
    version = tuple(DetectionRule.objects.aggregate(n=Count("pk"), at=Max("updated_at")).values())
    engine = _installed(version)
    if engine is not None:
        return engine
    with _build_lock:
        engine = _installed(version)  # another thread may have built it meanwhile
        if engine is None:
            engine = Engine(
                active_rules(),
                budget_us=settings.ASM_DETECTION_BUDGET_US,
                cache_dir=hyperscan_cache_dir(),
            )
            with _lock:
                _engine = (version, engine)
    return engine
