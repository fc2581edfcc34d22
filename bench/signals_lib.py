"""The signal benchmark behind `bench/signals`: security events per second evaluated by the
signal rules (`signals.evaluation.signals_evaluate`, what the `evaluate_signals` task runs) in
one process, against PostgreSQL, with every built-in rule and an empty passlist.

    .venv/bin/python bench/signals [--json] [--events N] [--attackers N] [--database-url URL]

Figures:

* `events_per_s`, a backlog: `--events` (100,000) security events spread over the last hour,
  all unevaluated, evaluated in rounds of `--batch-size` (1000), each round one transaction
  (claim, passlist, groups, window aggregates in SQL, signals created or updated,
  `evaluated_at`).
* `incremental_events_per_s`, the steady state after the backlog: `--increments` (50) times,
  `--increment-size` (100) new events (one second of traffic) are inserted, untimed, then
  evaluated, as the on-commit task does after an intake batch. The detail adds the median and
  slowest round.

The traffic is synthetic and made to stress grouping: one rule match a request, from
`--attackers` (2000) addresses drawn with a Pareto skew (a few send most), over 5 services and
8 routes (one of them none: a 404), in the mix of `KINDS` below (3 % of answers are 5xx). Most
rounds therefore touch hundreds of groups and create or update many signals: a harder case
than one attacker. `--json` prints one JSON object: both figures, the detail of each run
(`backlog`, `incremental`: events, seconds, signals created, updates) and `machine`. Progress
goes to stderr.

It creates a database `asm_bench_<random>` on the server of `--database-url` (default
`postgres://postgres@127.0.0.1:5432/postgres`), migrates it with production settings, inserts
the events with `bulk_create` (untimed) and drops the database at the end, also on an error,
Ctrl-C or SIGTERM. Nothing is published to a broker. `tests/signals/test_evaluation_bench.py`
runs it on a tiny load and checks the report's shape, never the speed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ingest_lib import (
    DEFAULT_DATABASE_URL,
    BenchError,
    _terminate,
    app_environ,
    bench_database,
    code_state,
    log,
    machine,
    migrate,
    setup_django,
)

# Never used: the evaluation publishes nothing. Settings want a broker URL in production mode.
UNUSED_BROKER_URL = "redis://127.0.0.1:6379/14"
SERVICES = ("web-store", "checkout", "accounts-api", "search", "admin")
ROUTES = ("/", "/products", "/products/<id>", "/search", "/login", "/cart", "/api/orders", "")
TOOLS = ("SQLmap", "Nikto", "nuclei", "Arachni", "Nessus")


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of security event in the generated traffic, and its share."""

    weight: int
    rule_id: str
    rule_type: str
    category: str = "attack_attempt"
    tool: bool = False


# Roughly what an exposed service sees: mostly injection probes and scanners, a few tools,
# blocks, RASP triggers and Log4Shell payloads.
KINDS = (
    Kind(30, "crs-942-100", "sql_injection"),
    Kind(15, "crs-941-110", "xss"),
    Kind(10, "crs-930-120", "lfi"),
    Kind(5, "sqr-000-013", "ssrf"),
    Kind(5, "crs-932-160", "command_injection"),
    Kind(15, "ua0-600-55x", "security_scanner"),
    Kind(8, "ua0-600-7xx", "attack_tool", tool=True),
    Kind(5, "blk-001-001", "block_ip", "security_response"),
    Kind(2, "rasp-942-100", "sql_injection", "vulnerability_trigger"),
    Kind(5, "sqr-000-017", "exploit_detection"),
)


class Traffic:
    """Generated security events (inserted untimed). Each request matches one rule; attackers
    are drawn with a skew, as a few addresses send most of the traffic."""

    def __init__(self, *, attackers: int, rng: random.Random) -> None:
        from services.models import Service

        self.rng = rng
        self.services = [
            Service.objects.create(name=name, env="prod", asm_enabled=True) for name in SERVICES
        ]
        self.ips = [f"198.51.{index // 250}.{index % 250 + 1}" for index in range(attackers)]
        self.weights = [kind.weight for kind in KINDS]
        self.next_id = 1

    def insert(self, *, count: int, start: datetime, end: datetime) -> None:
        """`count` events evenly spread from `start` to `end`."""
        from traces.models import SecurityEvent

        rng, rows = self.rng, []
        for index in range(count):
            kind = rng.choices(KINDS, self.weights)[0]
            route = rng.choice(ROUTES)
            status = 404 if not route else rng.choices((200, 403, 500), (90, 7, 3))[0]
            ident = self.next_id
            self.next_id += 1
            rows.append(
                SecurityEvent(
                    trace_id=f"{ident:032x}",
                    span_id=f"{ident:016x}",
                    service=rng.choice(self.services),
                    env="prod",
                    source="tracer",
                    rule_id=kind.rule_id,
                    rule_name=kind.rule_id,
                    rule_type=kind.rule_type,
                    rule_category=kind.category,
                    rule_tags={
                        "type": kind.rule_type,
                        "category": kind.category,
                        **({"tool_name": rng.choice(TOOLS)} if kind.tool else {}),
                    },
                    client_ip=self.ips[min(int(rng.paretovariate(1.2)) - 1, len(self.ips) - 1)],
                    route=route,
                    url=f"https://shop.example.com{route or '/nowhere'}",
                    status_code=403 if kind.category == "security_response" else status,
                    blocked=kind.category == "security_response",
                    detected_at=start + (end - start) * (index + 1) / count,
                )
            )
            if len(rows) == 5000:
                SecurityEvent.objects.bulk_create(rows)
                rows = []
        SecurityEvent.objects.bulk_create(rows)


def evaluate(*, batch_size: int, limit: int, now: datetime) -> dict[str, Any]:
    from django.db import connection

    from signals.evaluation import signals_evaluate
    from signals.models import Signal, SignalActivity

    connection.ensure_connection()
    started = time.perf_counter()
    result = signals_evaluate(now=now, limit=limit, batch_size=batch_size)
    seconds = time.perf_counter() - started
    return {
        "events": result.events,
        "seconds": round(seconds, 3),
        "events_per_s": round(result.events / seconds, 1) if seconds else 0.0,
        "signals_created": result.signals_created,
        "signal_updates": result.signals_updated,
        "severity_changes": result.severity_changes,
        "signals": Signal.objects.count(),
        "activity_rows": SignalActivity.objects.count(),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory(prefix="asm-bench-") as scratch,
        bench_database(args.database_url) as database_url,
    ):
        env = app_environ(
            database_url=database_url, broker_url=UNUSED_BROKER_URL, data_dir=Path(scratch)
        )
        log("migrating")
        migrate(env)
        setup_django(env)
        from django.db import connection, connections
        from django.utils import timezone

        try:
            now = timezone.now()
            # Reproducible traffic, not secrets.
            traffic = Traffic(attackers=args.attackers, rng=random.Random(args.seed))  # noqa: S311
            log(f"inserting {args.events} security events from {args.attackers} addresses")
            traffic.insert(count=args.events, start=now - timedelta(hours=1), end=now)
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE traces_securityevent")
            log(f"backlog: evaluating {args.events} events, {args.batch_size} a round")
            backlog = evaluate(batch_size=args.batch_size, limit=args.events, now=now)
            if backlog["events"] != args.events:
                raise BenchError(f"evaluated {backlog['events']} of {args.events} events")

            # Steady state: a few events arrive (an intake batch's worth, one second of
            # traffic) and are evaluated, as the on-commit task does; most signals exist.
            log(f"incremental: {args.increments} rounds of {args.increment_size} new events")
            rounds = []
            for index in range(args.increments):
                start = now + timedelta(seconds=index)
                traffic.insert(
                    count=args.increment_size, start=start, end=start + timedelta(seconds=1)
                )
                rounds.append(
                    evaluate(
                        batch_size=args.batch_size,
                        limit=args.increment_size,
                        now=start + timedelta(seconds=1),
                    )
                )
            times = sorted(r["seconds"] for r in rounds)
            total = sum(r["events"] for r in rounds)
            seconds = sum(times)
            incremental = {
                "events": total,
                "rounds": len(rounds),
                "events_per_round": args.increment_size,
                "seconds": round(seconds, 3),
                "events_per_s": round(total / seconds, 1) if seconds else 0.0,
                "round_ms_median": round(1000 * times[len(times) // 2], 1) if times else 0,
                "round_ms_max": round(1000 * times[-1], 1) if times else 0,
                "signals_created": sum(r["signals_created"] for r in rounds),
                "signal_updates": sum(r["signal_updates"] for r in rounds),
            }
            about = machine(database_url)
            about["load_average_1m_at_start"] = round(load_before, 2)
        finally:
            connections.close_all()
    return {
        "events_per_s": backlog["events_per_s"],
        "incremental_events_per_s": incremental["events_per_s"],
        "events": args.events,
        "attackers": args.attackers,
        "batch_size": args.batch_size,
        "backlog": backlog,
        "incremental": incremental,
        "machine": about,
        "code": code_state(),
    }


def report_table(result: dict[str, Any]) -> str:
    backlog, incremental, about = result["backlog"], result["incremental"], result["machine"]
    lines = [
        f"signal evaluation, one process, PostgreSQL {about['postgresql']}, "
        f"{about['cpus']} CPUs ({about['cpu_model']}), load {about['load_average_1m_at_start']}",
        "",
        "| run | events | seconds | events/s | signals |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| backlog ({result['batch_size']} a round) | {backlog['events']:,} | "
        f"{backlog['seconds']:.2f} | {backlog['events_per_s']:,.0f} | "
        f"{backlog['signals_created']} created |",
        f"| incremental ({incremental['events_per_round']} a round, "
        f"median {incremental['round_ms_median']} ms, max {incremental['round_ms_max']} ms) | "
        f"{incremental['events']:,} | {incremental['seconds']:.2f} | "
        f"{incremental['events_per_s']:,.0f} | updates |",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/signals",
        description="Security events per second evaluated by the signal rules.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--events", type=int, default=100_000, help="security events (100000)")
    parser.add_argument(
        "--attackers", type=int, default=2000, help="distinct client addresses (2000)"
    )
    parser.add_argument("--batch-size", type=int, default=1000, help="events a round (1000)")
    parser.add_argument(
        "--increments", type=int, default=50, help="incremental rounds after the backlog (50)"
    )
    parser.add_argument(
        "--increment-size", type=int, default=100, help="new events an incremental round (100)"
    )
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help="a PostgreSQL server (and a database to connect to there) where the benchmark "
        f"creates and drops its own database ({DEFAULT_DATABASE_URL})",
    )
    parser.add_argument("--seed", type=int, default=1, help="traffic generator seed (1)")
    args = parser.parse_args(argv)
    if min(args.events, args.attackers, args.batch_size, args.increment_size) < 1:
        parser.error("--events, --attackers, --batch-size and --increment-size must be positive")
    if args.increments < 0:
        parser.error("--increments cannot be negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        result = run(args)
    except BenchError as exc:
        log(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    print(json.dumps(result) if args.json else report_table(result))
    return 0
