"""The vulnerability benchmark behind `bench/vulns`: what `import_advisories` costs on a whole
OSV export, and what matching costs on many services.

    .venv/bin/python bench/vulns PyPI-all.zip [--json] [--services 500] [--dependencies 100]

Figures:

* `import_s`: `advisories_import` on the whole all.zip (read, parse, CVSS scores, insert), then
  `reimport_s`: the same file again (nothing changed: one read of the known advisories).
* `match_s`: `vulnerabilities_match` over every service, from none matched yet (every
  vulnerability and its activity row created), then `rematch_s`: again (nothing new).

Each service gets `--dependencies` libraries: half drawn from the names the feed has
advisories for, at versions taken from those advisories' range events (so some are affected,
some fixed), the rest made-up names that match nothing. It creates a database
`asm_bench_<random>` on the server of `--database-url`, migrates it, and drops it at the end.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import tempfile
import time
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

UNUSED_BROKER_URL = "redis://127.0.0.1:6379/14"


def populate(*, services: int, dependencies: int, rng: random.Random) -> int:
    from django.utils import timezone

    from services.models import AdvisoryPackage, Service, ServiceDependency

    versions_by_name: dict[str, list[str]] = {}
    for name, ranges in AdvisoryPackage.objects.values_list("name", "ranges"):
        versions = versions_by_name.setdefault(name, [])
        for osv_range in ranges:
            for event in osv_range["events"]:
                versions.extend(v for v in event.values() if v != "0")
    names = sorted(name for name, versions in versions_by_name.items() if versions)
    if not names:
        raise BenchError("the feed has no advisory with a version range")
    now = timezone.now()
    rows = []
    for index in range(services):
        service = Service.objects.create(
            name=f"bench-{index:04d}", env="prod" if index % 2 else "staging", language="python"
        )
        vulnerable_names = rng.sample(names, min(dependencies // 2, len(names)))
        for name in vulnerable_names:
            rows.append(
                ServiceDependency(
                    service=service,
                    name=name,
                    version=rng.choice(versions_by_name[name]),
                    last_seen=now,
                )
            )
        for extra in range(dependencies - len(vulnerable_names)):
            rows.append(
                ServiceDependency(
                    service=service,
                    name=f"internal-lib-{extra:03d}",
                    version=f"1.{rng.randrange(20)}.0",
                    last_seen=now,
                )
            )
    ServiceDependency.objects.bulk_create(rows, batch_size=5000)
    return len(rows)


def run(args: argparse.Namespace) -> dict[str, Any]:
    feed = Path(args.feed)
    if not feed.is_file():
        raise BenchError(f"no such file: {feed}")
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

        from services.advisories import advisories_import, documents_from_bytes
        from services.models import Vulnerability, VulnerabilityActivity
        from services.vulnerabilities import vulnerabilities_match

        try:
            connection.ensure_connection()
            log(f"importing {feed}")
            started = time.perf_counter()
            imported = advisories_import(documents=documents_from_bytes(feed.read_bytes()))
            import_s = time.perf_counter() - started
            started = time.perf_counter()
            reimported = advisories_import(documents=documents_from_bytes(feed.read_bytes()))
            reimport_s = time.perf_counter() - started

            log(f"creating {args.services} services of {args.dependencies} dependencies")
            rows = populate(
                services=args.services,
                dependencies=args.dependencies,
                rng=random.Random(args.seed),  # noqa: S311
            )
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
            log("matching")
            started = time.perf_counter()
            matched = vulnerabilities_match()
            match_s = time.perf_counter() - started
            started = time.perf_counter()
            rematched = vulnerabilities_match()
            rematch_s = time.perf_counter() - started
            about = machine(database_url)
            vulnerabilities = Vulnerability.objects.count()
            activity = VulnerabilityActivity.objects.count()
        finally:
            connections.close_all()
    return {
        "import_s": round(import_s, 3),
        "reimport_s": round(reimport_s, 3),
        "match_s": round(match_s, 3),
        "rematch_s": round(rematch_s, 3),
        "advisories": {
            "created": imported.created,
            "skipped": imported.skipped,
            "unchanged_on_reimport": reimported.unchanged,
        },
        "services": args.services,
        "dependencies": rows,
        "vulnerabilities": vulnerabilities,
        "activity_rows": activity,
        "rematch_created": rematched.created,
        "match_created": matched.created,
        "machine": about,
        "code": code_state(),
    }


def report_table(result: dict[str, Any]) -> str:
    about = result["machine"]
    return "\n".join(
        [
            f"vulnerabilities, one process, PostgreSQL {about['postgresql']}, "
            f"{about['cpus']} CPUs ({about['cpu_model']})",
            "",
            "| step | size | seconds |",
            "| --- | ---: | ---: |",
            f"| import | {result['advisories']['created']:,} advisories "
            f"| {result['import_s']:.2f} |",
            f"| re-import (unchanged) | {result['advisories']['unchanged_on_reimport']:,} "
            f"advisories | {result['reimport_s']:.2f} |",
            f"| match | {result['services']} services, {result['dependencies']:,} dependencies, "
            f"{result['match_created']:,} vulnerabilities | {result['match_s']:.2f} |",
            f"| re-match (nothing new) | same | {result['rematch_s']:.2f} |",
        ]
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/vulns", description="OSV import and vulnerability matching times."
    )
    parser.add_argument("feed", help="an OSV all.zip export, e.g. PyPI-all.zip")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--services", type=int, default=500, help="services (500)")
    parser.add_argument(
        "--dependencies", type=int, default=100, help="dependencies a service (100)"
    )
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if min(args.services, args.dependencies) < 1:
        parser.error("--services and --dependencies must be positive")
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
