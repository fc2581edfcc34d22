"""Detection benchmark: the console's engine and shipped rules beside libddwaf and its bundled
rules (the reference), over a labeled corpus of HTTP requests. Results: docs/benchmarks.md.

The corpus is JSON Lines, in the format of the shared WAF corpus: ``attacks.jsonl`` (label
``attack``, a ``category``; CRS-derived items carry ``crs.paranoia_level``, handwritten ones
``source: handwritten``) and ``benign.jsonl`` (label ``benign``, a ``difficulty``). Lines with
any other label (``ambiguous``) are skipped.

Each record becomes the ``HttpRequest`` a worker builds from a span, and both engines see the
same parsed addresses. Per request, and for each engine in turn, the benchmark times what a
worker does (see ``TIMED``); a request's time is the median of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RULES = REPO_ROOT / "signals" / "rules" / "default.json"
CORPUS_FILES = ("attacks.jsonl", "benign.jsonl")
WARMUP_REQUESTS = 50

# Which rule types (tags.type) name each corpus category. Detection is scored per request, as
# a tracer keeps a trace whichever rule fired; the "typed" figure counts only the requests a
# rule of the category's own types flagged, to show whether the right rule fired.
CATEGORY_TYPES: dict[str, frozenset[str]] = {
    "sql_injection": frozenset({"sql_injection"}),
    "xss": frozenset({"xss"}),
    "lfi": frozenset({"lfi"}),
    "sensitive_file_probe": frozenset({"lfi", "security_scanner"}),
    "rfi": frozenset({"rfi"}),
    "command_injection": frozenset({"command_injection"}),
    "ssrf": frozenset({"ssrf"}),
    "php_code_injection": frozenset({"php_code_injection"}),
    "java_code_injection": frozenset({"java_code_injection"}),
    # The console types Log4Shell as Java code injection, as CRS (944150) does; libddwaf has
    # "exploit_detection" rules for it too.
    "log4shell": frozenset({"java_code_injection", "exploit_detection"}),
    "js_code_injection": frozenset({"js_code_injection"}),
    # Perl's @{[ ]} interpolation sits in the template-injection rule, Ruby's Kernel, Process
    # and IO calls in the command-injection rule: the same technique as theirs.
    "perl_code_injection": frozenset({"perl_code_injection", "ssti"}),
    "ruby_code_injection": frozenset({"ruby_code_injection", "command_injection"}),
    "nosql_injection": frozenset({"nosql_injection"}),
    "orm_injection": frozenset({"nosql_injection", "sql_injection"}),
    "ldap_injection": frozenset({"ldap_injection"}),
    "ssti": frozenset({"ssti", "java_code_injection", "js_code_injection"}),
    "xxe": frozenset({"xxe"}),
    "security_scanner": frozenset({"security_scanner", "attack_tool", "commercial_scanner"}),
    "session_fixation": frozenset({"session_fixation"}),
    "protocol_attack": frozenset({"http_protocol_violation"}),
    "multipart_attack": frozenset({"http_protocol_violation"}),
    "unrestricted_file_upload": frozenset({"unrestricted_file_upload"}),
    "protocol_violation": frozenset({"http_protocol_violation"}),
}
# Policy checks (CRS 911/920: a missing Host or Accept header, odd methods, restricted
# extensions) are not attacks in the ASM sense: they get their own row, outside the paranoia
# and overall figures (as in the reference figures of the corpus' README).
POLICY_CATEGORIES = frozenset({"protocol_violation"})
DIFFICULTIES = ("normal", "hard", "near_miss")
LEVELS = ("pl1", "pl2+", "handwritten")

# What a worker does per request, and so what is timed for each engine.
TIMED = {
    "asm_console": "addresses(request), then Engine.run(addresses)",
    "libddwaf": "addresses(request), then the same values as libddwaf's address map, a new "
    "context and DDWaf.run (ctypes conversion and result decoding included)",
}


@dataclass(slots=True)
class Record:
    id: str
    label: str  # attack or benign
    category: str
    subcategory: str
    level: str  # attacks: pl1, pl2+ or handwritten
    difficulty: str  # benign: normal, hard or near_miss
    request: Any  # signals.detection.request.HttpRequest


@dataclass(slots=True)
class Outcome:
    rule_ids: tuple[str, ...]
    types: frozenset[str]
    timed_out: bool


@dataclass(slots=True)
class Evaluation:
    outcomes: list[Outcome] = field(default_factory=list)
    micros: list[float] = field(default_factory=list)


# --- corpus ------------------------------------------------------------------------------------


def _level(raw: Mapping[str, Any]) -> str:
    if raw.get("source") == "handwritten":
        return "handwritten"
    crs = raw.get("crs") or {}
    return "pl1" if crs.get("paranoia_level") == 1 else "pl2+"


def _body(raw: Mapping[str, Any]) -> str | None:
    body = raw.get("body")
    if isinstance(body, str):
        return body
    encoded = raw.get("body_b64")
    if not isinstance(encoded, str):
        return None
    try:
        # A body that is not UTF-8 (a Java serialization blob) keeps one character per byte.
        return base64.b64decode(encoded, validate=True).decode("latin-1")
    except (binascii.Error, ValueError):
        return None


def request_from_record(raw: Mapping[str, Any]) -> Any:
    """The request a worker would build from the record's span: lower-case header names (a
    repeated name joined with ", "), the raw request-target, the body as text."""
    from signals.detection.request import HttpRequest

    headers: dict[str, str] = {}
    for name, value in (raw.get("headers") or {}).items():
        key = str(name).lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else str(value)
    client_ip = raw.get("client_ip")
    return HttpRequest(
        method=str(raw.get("method") or ""),
        uri=str(raw.get("uri") or ""),
        headers=headers,
        body=_body(raw),
        client_ip=client_ip if isinstance(client_ip, str) and client_ip else None,
    )


def load_corpus(directory: Path) -> tuple[list[Record], int]:
    """The attack and benign records of a corpus directory, and how many others were skipped."""
    records: list[Record] = []
    skipped = 0
    for name in CORPUS_FILES:
        path = directory / name
        if not path.is_file():
            raise SystemExit(
                f"{path}: not found (a corpus directory holds {', '.join(CORPUS_FILES)})"
            )
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    raw = json.loads(line)
                except ValueError as exc:
                    raise SystemExit(f"{path}:{number}: not JSON ({exc})") from None
                label = raw.get("label") if isinstance(raw, dict) else None
                if label not in ("attack", "benign"):
                    skipped += 1
                    continue
                attack = label == "attack"
                records.append(
                    Record(
                        id=str(raw.get("id") or f"{name}:{number}"),
                        label=label,
                        category=str(raw.get("category") or "unknown"),
                        subcategory=str(raw.get("subcategory") or ""),
                        level=_level(raw) if attack else "",
                        difficulty="" if attack else str(raw.get("difficulty") or "normal"),
                        request=request_from_record(raw),
                    )
                )
    return records, skipped


# --- engines -----------------------------------------------------------------------------------


class BenchEngine(Protocol):
    name: str
    info: dict[str, Any]

    def __call__(self, request: Any) -> Outcome: ...


class ConsoleEngine:
    """The console's engine over a rule file (the shipped one by default), as a worker runs it."""

    name = "asm_console"

    def __init__(self, rules_path: Path, *, budget_us: int) -> None:
        from signals.detection.engine import Engine
        from signals.detection.request import addresses
        from signals.detection.rules import parse_rule_file

        document = json.loads(rules_path.read_text(encoding="utf-8"))
        rules = parse_rule_file(document)
        started = time.perf_counter()
        self.engine = Engine(rules, budget_us=budget_us)
        compile_s = time.perf_counter() - started
        self._addresses = addresses
        metadata = document.get("metadata", {}) if isinstance(document, dict) else {}
        self.info = {
            "rules_file": str(rules_path),
            "rules_version": str(metadata.get("rules_version", "")),
            "rules": len(rules),
            "compile_s": round(compile_s, 2),
            "timed": TIMED[self.name],
        }

    def __call__(self, request: Any) -> Outcome:
        result = self.engine.run(self._addresses(request))
        return Outcome(
            rule_ids=tuple(match.rule.id for match in result.matches),
            types=frozenset(match.rule.type for match in result.matches),
            timed_out=result.timed_out,
        )


def ddwaf_addresses(parsed: Mapping[str, Any]) -> dict[str, Any]:
    """libddwaf's address map from the console's parsed addresses: the same values (query as
    lists, parsed body, cookies, path segments, headers without cookies), so both engines judge
    identical input."""
    return {key: value for key, value in parsed.items() if value is not None and key != "usr.id"}


class ReferenceEngine:
    """libddwaf from the ddtrace package with its bundled rules, through ddtrace's private API
    (``ddtrace.appsec._ddwaf.DDWaf``)."""

    name = "libddwaf"

    def __init__(self, *, budget_us: int) -> None:
        try:
            import ddtrace
            from ddtrace.appsec._constants import DEFAULT
            from ddtrace.appsec._ddwaf import DDWaf
            from ddtrace.appsec._ddwaf.ddwaf_types import ddwaf_get_version
        except ImportError as exc:
            raise SystemExit(
                f"the reference needs the ddtrace package (pip install ddtrace): {exc}"
            ) from None
        from signals.detection.request import addresses

        rules = Path(DEFAULT.RULES).read_bytes()
        self.waf = DDWaf(
            rules,
            DEFAULT.APPSEC_OBFUSCATION_PARAMETER_KEY_REGEXP.encode(),
            DEFAULT.APPSEC_OBFUSCATION_PARAMETER_VALUE_REGEXP.encode(),
        )
        self.timeout_ms = budget_us / 1000
        self._addresses = addresses
        metadata = json.loads(rules).get("metadata", {})
        self.info = {
            "ddtrace": str(ddtrace.__version__),
            "libddwaf": ddwaf_get_version().decode(),
            "rules_file": str(DEFAULT.RULES),
            "rules_version": str(metadata.get("rules_version", "")),
            "rules": len(json.loads(rules).get("rules", [])),
            "timed": TIMED[self.name],
        }

    def __call__(self, request: Any) -> Outcome:
        context = self.waf._at_request_start()
        if context is None:
            raise RuntimeError("libddwaf did not create a request context")
        result = self.waf.run(
            context, ddwaf_addresses(self._addresses(request)), timeout_ms=self.timeout_ms
        )
        events = result.data or []
        return Outcome(
            rule_ids=tuple(str(event["rule"]["id"]) for event in events),
            types=frozenset(str(event["rule"]["tags"].get("type", "")) for event in events),
            timed_out=bool(result.timeout),
        )


# --- running and scoring -----------------------------------------------------------------------


def evaluate(
    records: Sequence[Record],
    engines: Sequence[Callable[[Any], Outcome]],
    *,
    repeat: int,
    progress: Callable[[str], None] | None = None,
) -> list[Evaluation]:
    """Each engine on each request, one after the other, ``repeat`` times; a request's time is
    the median of its runs, its outcome that of the first run. Interleaving the engines request
    by request gives both the same machine conditions."""
    evaluations = [Evaluation() for _ in engines]
    for record in records[:WARMUP_REQUESTS]:
        for engine in engines:
            engine(record.request)
    clock = time.perf_counter_ns
    for index, record in enumerate(records, 1):
        runs: list[list[float]] = [[] for _ in engines]
        for attempt in range(repeat):
            for position, engine in enumerate(engines):
                started = clock()
                outcome = engine(record.request)
                runs[position].append((clock() - started) / 1000)
                if attempt == 0:
                    evaluations[position].outcomes.append(outcome)
        for position, micros in enumerate(runs):
            evaluations[position].micros.append(statistics.median(micros))
        if progress is not None and index % 1000 == 0:
            progress(f"{index}/{len(records)} requests")
    return evaluations


def _share(counts: Mapping[str, int], key: str) -> float:
    return counts[key] / counts["total"] if counts["total"] else 0.0


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summarise(records: Sequence[Record], evaluation: Evaluation) -> dict[str, Any]:
    """Counts per category, paranoia level and benign difficulty, and the time per request."""
    categories: dict[str, dict[str, int]] = {}
    levels = {level: {"detected": 0, "total": 0} for level in LEVELS}
    overall = {"detected": 0, "total": 0}
    benign = {difficulty: {"flagged": 0, "total": 0} for difficulty in DIFFICULTIES}
    timed_out = 0
    for record, outcome in zip(records, evaluation.outcomes, strict=True):
        flagged = bool(outcome.rule_ids)
        timed_out += outcome.timed_out
        if record.label == "benign":
            counts = benign.setdefault(record.difficulty, {"flagged": 0, "total": 0})
            counts["total"] += 1
            counts["flagged"] += flagged
            continue
        row = categories.setdefault(record.category, {"detected": 0, "typed": 0, "total": 0})
        row["total"] += 1
        row["detected"] += flagged
        row["typed"] += bool(outcome.types & CATEGORY_TYPES.get(record.category, frozenset()))
        if record.category not in POLICY_CATEGORIES:
            for counts in (levels[record.level], overall):
                counts["total"] += 1
                counts["detected"] += flagged
    micros = evaluation.micros
    return {
        "categories": dict(
            sorted(categories.items(), key=lambda item: (-item[1]["total"], item[0]))
        ),
        "levels": levels,
        "overall": overall,
        "benign": benign,
        "median_us": round(statistics.median(micros), 1) if micros else 0.0,
        "p99_us": round(_percentile(micros, 0.99), 1),
        "timed_out": timed_out,
    }


def verdicts(ours: Mapping[str, Any], reference: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The aims of the issue, each met or not, with the figures behind it."""
    behind = [
        f"{name} {_share(row, 'detected'):.1%} < "
        f"{_share(reference['categories'][name], 'detected'):.1%}"
        for name, row in ours["categories"].items()
        if name not in POLICY_CATEGORIES
        and _share(row, "detected") < _share(reference["categories"][name], "detected")
    ]
    share = {key: _share(ours["levels"][key], "detected") for key in ("pl1", "handwritten")} | {
        "overall": _share(ours["overall"], "detected")
    }
    fp = {key: _share(ours["benign"][key], "flagged") for key in ("normal", "hard")}
    ref_fp = {key: _share(reference["benign"][key], "flagged") for key in ("normal", "hard")}
    aims = [
        (
            "every attack category: at least libddwaf's share",
            not behind,
            ", ".join(behind) or "all",
        ),
        ("paranoia level 1: at least 80%", share["pl1"] >= 0.8, f"{share['pl1']:.1%}"),
        ("handwritten: at least 80%", share["handwritten"] >= 0.8, f"{share['handwritten']:.1%}"),
        ("overall: at least 60%", share["overall"] >= 0.6, f"{share['overall']:.1%}"),
    ]
    for key, limit in (("normal", 0.01), ("hard", 0.10)):
        aims.append(
            (
                f"false positives on {key}: at most {limit:.0%} and at most libddwaf's",
                fp[key] <= limit and fp[key] <= ref_fp[key],
                f"{fp[key]:.1%} (libddwaf {ref_fp[key]:.1%})",
            )
        )
    aims.append(
        (
            "median time per request: at most libddwaf's",
            ours["median_us"] <= reference["median_us"],
            f"{ours['median_us']} µs (libddwaf {reference['median_us']} µs)",
        )
    )
    return [{"aim": aim, "met": met, "detail": detail} for aim, met, detail in aims]


# --- output ------------------------------------------------------------------------------------


def _cell(counts: Mapping[str, int], key: str) -> str:
    if not counts.get("total"):
        return "-"
    return f"{_share(counts, key):.1%} ({counts[key]}/{counts['total']})"


def render(report: Mapping[str, Any]) -> str:
    """The report as Markdown tables (what docs/benchmarks.md records)."""
    ours = report["engines"]["asm_console"]
    reference = report["engines"]["libddwaf"]
    both = (ours, reference)
    corpus = report["corpus"]
    lines = [
        f"corpus {corpus['path']}: {corpus['attacks']} attacks, {corpus['benign']} benign, "
        f"{corpus['skipped']} other lines skipped",
        f"asm_console: {ours['engine']['rules']} rules, {ours['engine']['rules_file']} "
        f"(compiled in {ours['engine']['compile_s']} s)",
        f"libddwaf {reference['engine']['libddwaf']} (ddtrace {reference['engine']['ddtrace']}), "
        f"bundled rules {reference['engine']['rules_version']}",
        "",
        "| attacks | n | asm_console | libddwaf | asm_console, by a rule of the category's type |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for category, row in ours["categories"].items():
        label = category + (" (policy; not in the totals)" if category in POLICY_CATEGORIES else "")
        lines.append(
            f"| {label} | {row['total']} | {_cell(row, 'detected')} | "
            f"{_cell(reference['categories'][category], 'detected')} | {_cell(row, 'typed')} |"
        )
    for level in LEVELS:
        cells = " | ".join(_cell(engine["levels"][level], "detected") for engine in both)
        lines.append(f"| **{level}** | {ours['levels'][level]['total']} | {cells} | |")
    cells = " | ".join(_cell(engine["overall"], "detected") for engine in both)
    lines.append(f"| **overall** | {ours['overall']['total']} | {cells} | |")
    lines += [
        "",
        "| benign (false positives) | n | asm_console | libddwaf |",
        "| --- | ---: | ---: | ---: |",
    ]
    for difficulty in DIFFICULTIES:
        cells = " | ".join(_cell(engine["benign"][difficulty], "flagged") for engine in both)
        lines.append(f"| {difficulty} | {ours['benign'][difficulty]['total']} | {cells} |")
    lines += ["", "| time per request | asm_console | libddwaf |", "| --- | ---: | ---: |"]
    for key, label in (
        ("median_us", "median µs"),
        ("p99_us", "p99 µs"),
        ("timed_out", "over budget"),
    ):
        lines.append(f"| {label} | {ours[key]} | {reference[key]} |")
    timing = report["timing"]
    lines += [
        "",
        f"timed per request (median of {timing['repeat']} runs, budget {timing['budget_ms']} ms):",
    ]
    lines += [f"  {name}: {what}" for name, what in timing["timed"].items()]
    lines += ["", "aims:"]
    lines += [
        f"  [{'met' if aim['met'] else 'NOT met'}] {aim['aim']}: {aim['detail']}"
        for aim in report["aims"]
    ]
    return "\n".join(lines)


def differences(
    records: Sequence[Record], evaluation: Evaluation, selection: str | None
) -> Iterator[str]:
    """For --show: the attacks the console missed and the benign requests it flagged, with the
    rules, in one category (or benign difficulty) or all."""
    for record, outcome in zip(records, evaluation.outcomes, strict=True):
        if selection and selection not in (record.category, record.difficulty):
            continue
        flagged = bool(outcome.rule_ids)
        if (record.label == "attack") == flagged:
            continue
        request = record.request
        shown = json.dumps(
            {"method": request.method, "uri": request.uri, "body": (request.body or "")[:300]},
            ensure_ascii=False,
        )
        kind = "missed" if record.label == "attack" else f"flagged by {','.join(outcome.rule_ids)}"
        yield f"{record.id} [{record.subcategory}] {kind}: {shown}"


def _use_settings_without_database(data_dir: str) -> None:
    """Import the console's code the way a worker does, but with the embedded settings and a
    throwaway data directory: the engine needs no database, and nothing here touches one."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = "asm_console.settings"
    os.environ["ASM_DATA_DIR"] = data_dir
    for name in ("DATABASE_URL", "CELERY_BROKER_URL"):
        os.environ.pop(name, None)
    import django

    django.setup()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/detection",
        description="Share of attacks detected per category, false positives on benign requests "
        "and time per request, for the console's rules and libddwaf's bundled rules over the "
        "same labeled JSONL corpus.",
    )
    parser.add_argument(
        "corpus", type=Path, help="directory holding attacks.jsonl and benign.jsonl"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--rules", type=Path, default=DEFAULT_RULES, help="rule file to measure")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per request and engine")
    parser.add_argument(
        "--show",
        metavar="CATEGORY",
        nargs="?",
        const="",
        help="also list the console's misses and false positives (of one category or benign "
        "difficulty, or all)",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="asm-bench-detection-") as data_dir:
        _use_settings_without_database(data_dir)
        from django.conf import settings

        budget_us = int(settings.ASM_DETECTION_BUDGET_US)
        records, skipped = load_corpus(args.corpus)
        engines: list[BenchEngine] = [
            ConsoleEngine(args.rules, budget_us=budget_us),
            ReferenceEngine(budget_us=budget_us),
        ]
        progress(f"{len(records)} requests, {args.repeat} timed runs each per engine")
        evaluations = evaluate(records, engines, repeat=args.repeat, progress=progress)

    summaries = {
        engine.name: {"engine": engine.info, **summarise(records, evaluation)}
        for engine, evaluation in zip(engines, evaluations, strict=True)
    }
    report = {
        "corpus": {
            "path": str(args.corpus),
            "attacks": sum(record.label == "attack" for record in records),
            "benign": sum(record.label == "benign" for record in records),
            "skipped": skipped,
        },
        "timing": {"repeat": args.repeat, "budget_ms": budget_us / 1000, "timed": TIMED},
        "category_types": {name: sorted(types) for name, types in CATEGORY_TYPES.items()},
        "policy_categories": sorted(POLICY_CATEGORIES),
        "engines": summaries,
        "aims": verdicts(summaries["asm_console"], summaries["libddwaf"]),
    }
    print(json.dumps(report, indent=1, ensure_ascii=False) if args.json else render(report))
    if args.show is not None:
        for line in differences(records, evaluations[0], args.show or None):
            print(line)
    return 0
