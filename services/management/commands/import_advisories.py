"""`python manage.py import_advisories PATH_OR_URL`: import an OSV feed, then match.

PATH_OR_URL is an ecosystem's all.zip export (for example
https://osv-vulnerabilities.storage.googleapis.com/PyPI/all.zip) or one OSV JSON file, local
or over https. URLs go through the console's outbound helper (timeouts, few redirects, no
private or metadata addresses).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from services.advisories import FeedError, advisories_import, documents_from_bytes
from services.vulnerabilities import vulnerabilities_match

# The npm export is the largest today, at a few tens of MB.
MAX_FEED_BYTES = 512 * 1024 * 1024


def _download(url: str, *, timeout: float) -> bytes:
    from notifications import outbound

    try:
        response = outbound.request("GET", url, timeout=timeout, max_bytes=MAX_FEED_BYTES)
    except outbound.OutboundError as exc:
        raise CommandError(f"Cannot fetch {url}: {exc}") from None
    if response.status != 200:
        raise CommandError(f"Cannot fetch {url}: HTTP {response.status}")
    if response.truncated:
        raise CommandError(f"{url} is larger than {MAX_FEED_BYTES} bytes")
    return response.body


class Command(BaseCommand):
    help = "Import OSV advisories (an all.zip export or one OSV JSON file, path or https URL)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("source", help="a local path, or an https:// URL")
        parser.add_argument(
            "--timeout", type=float, default=120.0, help="seconds to fetch a URL (120)"
        )
        parser.add_argument(
            "--allow-http", action="store_true", help="accept a plain http:// URL (tests)"
        )
        parser.add_argument(
            "--no-match", action="store_true", help="do not match services afterwards"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        source: str = options["source"]
        started = time.perf_counter()
        if source.startswith("https://") or (
            options["allow_http"] and source.startswith("http://")
        ):
            data = _download(source, timeout=options["timeout"])
        elif "://" in source:
            raise CommandError("Only https:// URLs are fetched (or http:// with --allow-http).")
        else:
            path = Path(source)
            if not path.is_file():
                raise CommandError(f"No such file: {source}")
            data = path.read_bytes()
        try:
            result = advisories_import(documents=documents_from_bytes(data, name=source))
        except FeedError as exc:
            raise CommandError(str(exc)) from None
        imported = time.perf_counter()
        self.stdout.write(
            f"advisories: {result.created} created, {result.updated} updated, "
            f"{result.unchanged} unchanged, {result.withdrawn} withdrawn, "
            f"{result.skipped} skipped in {imported - started:.1f} s"
        )
        if options["no_match"]:
            return
        match = vulnerabilities_match()
        self.stdout.write(
            f"matched {match.services} services ({match.dependencies} dependencies): "
            f"{match.created} new, {match.reopened} reopened, {match.closed} auto-closed "
            f"vulnerabilities in {time.perf_counter() - imported:.1f} s"
        )
