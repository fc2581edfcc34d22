"""Importing OSV advisories: an ecosystem's `all.zip` export or one OSV JSON document.

One code path for every ecosystem: an advisory is kept for its affected packages in the
ecosystems the console matches (`Ecosystem`), whatever feed it came from. Importing again
updates an advisory whose `modified` changed and marks withdrawn ones, which then match
nothing; unchanged advisories are not written at all, so a re-import costs a read.

Feeds are data from outside: every field is checked for its type and bounded before it is
stored, and a document that is not an OSV advisory is skipped and counted, never fatal.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from cvss import CVSS2, CVSS3, CVSS4
from cvss.exceptions import CVSSError
from django.db import transaction
from django.utils.dateparse import parse_datetime

from services.models import (
    Advisory,
    AdvisoryPackage,
    Ecosystem,
    VulnerabilitySeverity,
)
from services.versions import normalize_name

# An all.zip holds one small file per advisory; a member this large is not one.
MAX_MEMBER_BYTES = 10 * 1024 * 1024
MAX_ALIASES = 50
MAX_REFERENCES = 100
MAX_DETAILS = 50_000
BATCH = 500

# Preferred first when an advisory gives several scores.
_CVSS_TYPES = (("CVSS_V3", CVSS3), ("CVSS_V4", CVSS4), ("CVSS_V2", CVSS2))
# GitHub's advisories carry their own rating when they have no vector.
_GHSA_RATINGS = {
    "LOW": VulnerabilitySeverity.LOW,
    "MODERATE": VulnerabilitySeverity.MEDIUM,
    "MEDIUM": VulnerabilitySeverity.MEDIUM,
    "HIGH": VulnerabilitySeverity.HIGH,
    "CRITICAL": VulnerabilitySeverity.CRITICAL,
}


class FeedError(ValueError):
    """The file is neither an OSV all.zip nor an OSV JSON document."""


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    withdrawn: int = 0
    # Documents that are not advisories, or that affect no ecosystem the console matches.
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


def severity_for_score(score: float | None) -> str:
    """CVSS's qualitative rating of a base score (a score of 0.0, "none", counts as low)."""
    if score is None:
        return VulnerabilitySeverity.UNKNOWN
    if score >= 9.0:
        return VulnerabilitySeverity.CRITICAL
    if score >= 7.0:
        return VulnerabilitySeverity.HIGH
    if score >= 4.0:
        return VulnerabilitySeverity.MEDIUM
    return VulnerabilitySeverity.LOW


def cvss_base(severity: object) -> tuple[str, float | None]:
    """The vector and base score of an OSV `severity` list, computed by the `cvss` library."""
    if not isinstance(severity, list):
        return "", None
    by_type = {
        entry.get("type"): entry.get("score")
        for entry in severity
        if isinstance(entry, dict) and isinstance(entry.get("score"), str)
    }
    for kind, parser in _CVSS_TYPES:
        vector = by_type.get(kind)
        if not vector:
            continue
        try:
            scored = parser(vector[:300])
            scores = scored.scores()
        except (CVSSError, ValueError, KeyError, IndexError):
            continue
        return vector[:300], float(scores[0])
    return "", None


def _text(value: object, limit: int) -> str:
    if not isinstance(value, str):
        return ""
    return value.replace("\x00", "")[:limit]


def _strings(value: object, limit: int, length: int = 200) -> list[str]:
    if not isinstance(value, list):
        return []
    return [_text(item, length) for item in value[:limit] if isinstance(item, str)]


def _datetime(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = parse_datetime(value)
    except ValueError:
        return None
    if parsed is not None and parsed.tzinfo is None:
        # OSV times are RFC 3339 in UTC; a feed that drops the zone means UTC too.
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


@dataclass
class ParsedAdvisory:
    fields: dict[str, Any]
    packages: list[dict[str, Any]]
    withdrawn: datetime | None


def _ranges(value: object) -> list[dict[str, Any]]:
    kept = []
    for osv_range in value if isinstance(value, list) else []:
        if not isinstance(osv_range, dict) or osv_range.get("type") not in ("ECOSYSTEM", "SEMVER"):
            continue
        events = [
            {kind: _text(event[kind], 100)}
            for event in osv_range.get("events") or []
            if isinstance(event, dict)
            for kind in ("introduced", "fixed", "last_affected")
            if isinstance(event.get(kind), str)
        ]
        if events:
            kept.append({"type": osv_range["type"], "events": events})
    return kept


def advisory_parse(document: object) -> ParsedAdvisory | None:
    """The fields of an OSV document the console keeps, or None when it is no advisory or
    affects no ecosystem the console matches."""
    if not isinstance(document, dict):
        return None
    osv_id = _text(document.get("id"), 100)
    modified = _datetime(document.get("modified"))
    if not osv_id or modified is None:
        return None
    packages: dict[tuple[str, str], dict[str, Any]] = {}
    affected_kept = []
    for affected in document.get("affected") or []:
        if not isinstance(affected, dict) or not isinstance(affected.get("package"), dict):
            continue
        ecosystem = affected["package"].get("ecosystem")
        name = _text(affected["package"].get("name"), 200)
        if ecosystem not in Ecosystem.values or not name:
            continue
        ranges = _ranges(affected.get("ranges"))
        versions = _strings(affected.get("versions"), 10_000, 100)
        if not ranges and not versions:
            continue
        fixed = [
            event["fixed"]
            for osv_range in ranges
            for event in osv_range["events"]
            if "fixed" in event
        ]
        key = (ecosystem, normalize_name(ecosystem, name))
        entry = packages.setdefault(
            key,
            {
                "ecosystem": ecosystem,
                "name": key[1],
                "ranges": [],
                "versions": [],
                "fixed_versions": [],
            },
        )
        # An advisory may list one package twice (per-platform entries): both count.
        entry["ranges"] += ranges
        entry["versions"] += versions
        entry["fixed_versions"] += [v for v in fixed if v not in entry["fixed_versions"]]
        affected_kept.append(
            {
                "package": {"ecosystem": ecosystem, "name": name},
                "ranges": ranges,
                "versions": versions,
            }
        )
    if not packages:
        return None
    vector, score = cvss_base(document.get("severity"))
    base_severity = severity_for_score(score)
    if score is None:
        specific = document.get("database_specific")
        rating = specific.get("severity") if isinstance(specific, dict) else None
        if isinstance(rating, str):
            base_severity = _GHSA_RATINGS.get(rating.upper(), base_severity)
    references = [
        {"type": _text(ref.get("type"), 32), "url": _text(ref.get("url"), 2000)}
        for ref in (document.get("references") or [])[:MAX_REFERENCES]
        if isinstance(ref, dict) and isinstance(ref.get("url"), str)
    ]
    return ParsedAdvisory(
        fields={
            "osv_id": osv_id,
            "ecosystem": next(iter(packages))[0],
            "aliases": _strings(document.get("aliases"), MAX_ALIASES, 100),
            "summary": _text(document.get("summary"), 1000),
            "details": _text(document.get("details"), MAX_DETAILS),
            "references": references,
            "affected": affected_kept,
            "severity_vector": vector,
            "base_score": score,
            "base_severity": base_severity,
            "published": _datetime(document.get("published")),
            "modified": modified,
        },
        packages=list(packages.values()),
        withdrawn=_datetime(document.get("withdrawn")),
    )


def documents_from_bytes(data: bytes, *, name: str = "") -> Iterator[object]:
    """The OSV documents of an all.zip export or of a JSON file (one advisory, or a list)."""
    if data[:4] == b"PK\x03\x04":
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile as exc:
            raise FeedError(f"{name or 'the file'} is not a valid zip file: {exc}") from None
        for member in archive.infolist():
            if not member.filename.endswith(".json") or member.file_size > MAX_MEMBER_BYTES:
                continue
            try:
                yield orjson.loads(archive.read(member))
            except (orjson.JSONDecodeError, zipfile.BadZipFile, ValueError):
                yield None
        return
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise FeedError(
            f"{name or 'the file'} is neither an OSV all.zip nor OSV JSON: {exc}"
        ) from None
    if isinstance(document, list):
        yield from document
    elif isinstance(document, dict):
        yield document
    else:
        raise FeedError(f"{name or 'the file'}: expected an OSV advisory (a JSON object)")


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def advisories_import(*, documents: Iterable[object]) -> ImportResult:
    """Create new advisories, update those whose `modified` changed, mark withdrawn ones (their
    packages go, so they match nothing). One transaction for the whole feed."""
    result = ImportResult()
    parsed: dict[str, ParsedAdvisory] = {}
    for document in documents:
        advisory = advisory_parse(document)
        if advisory is None:
            result.skipped += 1
            continue
        previous = parsed.get(advisory.fields["osv_id"])
        if previous is None or advisory.fields["modified"] >= previous.fields["modified"]:
            parsed[advisory.fields["osv_id"]] = advisory

    with transaction.atomic():
        existing = {
            row[0]: (row[1], row[2], row[3])
            for row in Advisory.objects.filter(osv_id__in=list(parsed)).values_list(
                "osv_id", "pk", "modified", "withdrawn"
            )
        }
        to_create: list[ParsedAdvisory] = []
        to_update: list[tuple[int, ParsedAdvisory]] = []
        to_withdraw: list[tuple[int, datetime]] = []
        for osv_id, advisory in parsed.items():
            known = existing.get(osv_id)
            if advisory.withdrawn is not None:
                if known is not None and known[2] is None:
                    to_withdraw.append((known[0], advisory.withdrawn))
                    result.withdrawn += 1
                elif known is None:
                    result.skipped += 1
                else:
                    result.unchanged += 1
                continue
            if known is None:
                to_create.append(advisory)
            elif advisory.fields["modified"] > known[1] or known[2] is not None:
                to_update.append((known[0], advisory))
            else:
                result.unchanged += 1

        for withdrawn_pk, when in to_withdraw:
            Advisory.objects.filter(pk=withdrawn_pk).update(withdrawn=when)
        AdvisoryPackage.objects.filter(advisory_id__in=[pk for pk, _ in to_withdraw]).delete()

        for chunk in _chunks(to_update, BATCH):
            ids = [pk for pk, _ in chunk]
            AdvisoryPackage.objects.filter(advisory_id__in=ids).delete()
            rows = [Advisory(pk=pk, withdrawn=None, **advisory.fields) for pk, advisory in chunk]
            Advisory.objects.bulk_update(rows, [*chunk[0][1].fields, "withdrawn"])
            AdvisoryPackage.objects.bulk_create(
                AdvisoryPackage(advisory_id=pk, **package)
                for pk, advisory in chunk
                for package in advisory.packages
            )
        result.updated = len(to_update)

        for chunk_new in _chunks(to_create, BATCH):
            created = Advisory.objects.bulk_create(
                Advisory(**advisory.fields) for advisory in chunk_new
            )
            if any(row.pk is None for row in created):
                # Backends that return no ids from a bulk insert: look them up.
                ids_by_name = dict(
                    Advisory.objects.filter(
                        osv_id__in=[a.fields["osv_id"] for a in chunk_new]
                    ).values_list("osv_id", "pk")
                )
            else:
                ids_by_name = {row.osv_id: row.pk for row in created}
            AdvisoryPackage.objects.bulk_create(
                AdvisoryPackage(advisory_id=ids_by_name[advisory.fields["osv_id"]], **package)
                for advisory in chunk_new
                for package in advisory.packages
            )
        result.created = len(to_create)
    return result
