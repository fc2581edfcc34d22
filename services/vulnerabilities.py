"""Vulnerabilities: matching services' dependencies against advisories, the adjusted
severity, and triage.

Matching (`vulnerabilities_match`) is idempotent and runs after an advisory import and when
telemetry or an upload brings new dependencies. For each service, the current version of a
library is the one seen last (a tracer reports what the running process loaded; a restart on a
new version reports the new one later). A vulnerability of a version the service no longer
runs, or that no advisory affects any more (withdrawn, corrected ranges), is auto-closed; one
auto-closed whose version comes back is reopened. Every change writes one activity row.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from notifications.outbox import notifications_enqueue_vulnerabilities
from services.models import (
    AdvisoryPackage,
    Service,
    ServiceDependency,
    Vulnerability,
    VulnerabilityActivity,
    VulnerabilitySeverity,
)
from services.versions import LANGUAGE_ECOSYSTEMS, CompiledPackage, compile_package, is_affected
from services.versions import normalize_name as normalize_name
from traces.models import SecurityEvent

Status = Vulnerability.Status
Kind = VulnerabilityActivity.Kind
Severity = VulnerabilitySeverity

UNDER_ATTACK_WINDOW = timedelta(days=7)
# Envs that count as production; any other lowers the severity by one step.
PRODUCTION_ENVS = frozenset({"prod", "production", "prd", "live"})
MAX_COMMENT_LENGTH = 10_000
# Statuses the console closes when the version goes; remediated ones are already closed.
_CLOSABLE = (Status.OPEN, Status.IN_PROGRESS, Status.MUTED)
_CHUNK = 2000

REASON_TEXT = {
    "reachable": "a vulnerable function was called (tracer reachability)",
    "under_attack": "the service was attacked in the last 7 days",
    "not_production": "the env is not production",
}


def is_production(env: str) -> bool:
    return env.strip().lower() in PRODUCTION_ENVS


def adjusted_severity(
    *, base: str, reachable: bool, under_attack: bool, env: str
) -> tuple[str, list[str]]:
    """The base severity raised one step for reachability and one for an attack in the last
    7 days, lowered one step outside production; between low and critical. An unknown base
    stays unknown (there is nothing to raise), though its reasons are kept."""
    reasons = []
    if reachable:
        reasons.append("reachable")
    if under_attack:
        reasons.append("under_attack")
    if not is_production(env):
        reasons.append("not_production")
    if base == Severity.UNKNOWN:
        return base, reasons
    rank = Severity.rank(base) + reachable + under_attack - (not is_production(env))
    rank = min(max(rank, Severity.rank(Severity.LOW)), Severity.rank(Severity.CRITICAL))
    return Severity.values[rank], reasons


@dataclass
class MatchResult:
    services: int = 0
    dependencies: int = 0
    created: int = 0
    reopened: int = 0
    closed: int = 0
    severity_changed: int = 0


@dataclass(frozen=True, slots=True)
class _Current:
    """A library version a service runs now."""

    service_id: int
    env: str
    ecosystem: str
    library: str
    version: str
    reached_ids: frozenset[str]


def _dependency_ecosystem(dependency_ecosystem: str, language: str) -> str | None:
    if dependency_ecosystem:
        return dependency_ecosystem
    return LANGUAGE_ECOSYSTEMS.get(language.strip().lower())


def _current_dependencies(service_ids: list[int]) -> list[_Current]:
    services = dict(Service.objects.filter(pk__in=service_ids).values_list("pk", "language"))
    envs = dict(Service.objects.filter(pk__in=service_ids).values_list("pk", "env"))
    latest: dict[tuple[int, str, str], list[tuple[datetime, str, list[Any]]]] = defaultdict(list)
    for service_id, name, version, ecosystem, reachability, last_seen in (
        ServiceDependency.objects.filter(service_id__in=service_ids)
        .values_list("service_id", "name", "version", "ecosystem", "reachability", "last_seen")
        .iterator(chunk_size=5000)
    ):
        resolved = _dependency_ecosystem(ecosystem, services.get(service_id, ""))
        if resolved is None or not version:
            continue
        latest[(service_id, resolved, normalize_name(resolved, name))].append(
            (last_seen, version, reachability)
        )
    found = []
    for (service_id, ecosystem, library), seen in latest.items():
        newest = max(when for when, _, _ in seen)
        for when, version, reachability in seen:
            if when != newest:
                continue
            reached = frozenset(
                str(entry.get("id"))
                for entry in (reachability if isinstance(reachability, list) else [])
                if isinstance(entry, dict) and entry.get("reached")
            )
            found.append(
                _Current(service_id, envs[service_id], ecosystem, library, version, reached)
            )
    return found


@dataclass(frozen=True, slots=True)
class _AdvisoryInfo:
    pk: int
    ids: frozenset[str]  # the OSV id and its aliases, for reachability
    base_severity: str
    base_score: float | None


def _advisory_packages(
    wanted: set[tuple[str, str]],
) -> dict[tuple[str, str], list[tuple[_AdvisoryInfo, CompiledPackage]]]:
    by_ecosystem: dict[str, set[str]] = defaultdict(set)
    for ecosystem, name in wanted:
        by_ecosystem[ecosystem].add(name)
    packages: dict[tuple[str, str], list[tuple[_AdvisoryInfo, CompiledPackage]]] = defaultdict(list)
    infos: dict[int, _AdvisoryInfo] = {}
    for ecosystem, names in by_ecosystem.items():
        name_list = sorted(names)
        for start in range(0, len(name_list), _CHUNK):
            rows = AdvisoryPackage.objects.filter(
                ecosystem=ecosystem,
                name__in=name_list[start : start + _CHUNK],
                advisory__withdrawn__isnull=True,
            ).values_list(
                "name",
                "ranges",
                "versions",
                "advisory_id",
                "advisory__osv_id",
                "advisory__aliases",
                "advisory__base_severity",
                "advisory__base_score",
            )
            for name, ranges, versions, pk, osv_id, aliases, severity, score in rows:
                info = infos.get(pk)
                if info is None:
                    info = infos[pk] = _AdvisoryInfo(
                        pk, frozenset([osv_id, *(aliases or [])]), severity, score
                    )
                packages[(ecosystem, name)].append(
                    (info, compile_package(ecosystem, ranges or [], versions or []))
                )
    return packages


def _under_attack(service_ids: list[int], now: datetime) -> set[int]:
    found: set[int] = set()
    for start in range(0, len(service_ids), _CHUNK):
        found.update(
            SecurityEvent.objects.filter(
                service_id__in=service_ids[start : start + _CHUNK],
                detected_at__gte=now - UNDER_ATTACK_WINDOW,
            )
            .order_by()
            .values_list("service_id", flat=True)
            .distinct()
        )
    return found


def vulnerabilities_match(
    *, service_ids: Iterable[int] | None = None, now: datetime | None = None
) -> MatchResult:
    """Match the dependencies of the given services (all when None) against the advisories;
    create, refresh, reopen and auto-close vulnerabilities, one activity row per change."""
    now = now or timezone.now()
    ids = (
        sorted(set(service_ids))
        if service_ids is not None
        else list(Service.objects.order_by("pk").values_list("pk", flat=True))
    )
    result = MatchResult(services=len(ids))
    for start in range(0, len(ids), 500):
        _match_chunk(ids[start : start + 500], now, result)
    return result


def _match_chunk(ids: list[int], now: datetime, result: MatchResult) -> None:
    with transaction.atomic():
        # Serializes matching of the same services (a telemetry task beside an import).
        list(Service.objects.select_for_update().filter(pk__in=ids).order_by("pk").values("pk"))
        current = _current_dependencies(ids)
        result.dependencies += len(current)
        packages = _advisory_packages({(dep.ecosystem, dep.library) for dep in current})
        attacked = _under_attack(ids, now)

        matched: dict[tuple[int, int, str, str], tuple[_Current, _AdvisoryInfo]] = {}
        for dep in current:
            for info, compiled in packages.get((dep.ecosystem, dep.library), ()):
                if is_affected(dep.ecosystem, dep.version, compiled):
                    matched[(dep.service_id, info.pk, dep.library, dep.version)] = (dep, info)

        existing = {
            (v.service_id, v.advisory_id, v.library, v.version): v
            for v in Vulnerability.objects.filter(service_id__in=ids)
        }
        activities: list[VulnerabilityActivity] = []
        to_update: list[Vulnerability] = []
        seen_pks: list[int] = []
        to_create: list[Vulnerability] = []
        for key, (dep, info) in matched.items():
            reachable = bool(dep.reached_ids & info.ids)
            severity, reasons = adjusted_severity(
                base=info.base_severity,
                reachable=reachable,
                under_attack=dep.service_id in attacked,
                env=dep.env,
            )
            vulnerability = existing.get(key)
            if vulnerability is None:
                to_create.append(
                    Vulnerability(
                        service_id=dep.service_id,
                        env=dep.env,
                        ecosystem=dep.ecosystem,
                        library=dep.library,
                        version=dep.version,
                        advisory_id=info.pk,
                        reachable=reachable,
                        base_severity=info.base_severity,
                        base_score=info.base_score,
                        severity=severity,
                        severity_reasons=reasons,
                        first_detected=now,
                        last_detected=now,
                    )
                )
                continue
            seen_pks.append(vulnerability.pk)
            changed = False
            if vulnerability.status == Status.AUTO_CLOSED:
                activities.append(
                    _activity(
                        vulnerability,
                        Kind.REOPENED,
                        Status.AUTO_CLOSED,
                        Status.OPEN,
                        "The affected version is running again.",
                    )
                )
                vulnerability.status, vulnerability.closed_at = Status.OPEN, None
                result.reopened += 1
                changed = True
            if vulnerability.severity != severity:
                activities.append(
                    _activity(
                        vulnerability,
                        Kind.SEVERITY_CHANGED,
                        vulnerability.severity,
                        severity,
                        ", ".join(REASON_TEXT[r] for r in reasons),
                    )
                )
                result.severity_changed += 1
                changed = True
            if (
                changed
                or vulnerability.reachable != reachable
                or vulnerability.severity_reasons != reasons
                or vulnerability.base_severity != info.base_severity
                or vulnerability.base_score != info.base_score
            ):
                vulnerability.reachable = reachable
                vulnerability.severity, vulnerability.severity_reasons = severity, reasons
                vulnerability.base_severity = info.base_severity
                vulnerability.base_score = info.base_score
                vulnerability.last_detected = now
                to_update.append(vulnerability)

        to_close = [
            vulnerability
            for key, vulnerability in existing.items()
            if key not in matched and vulnerability.status in _CLOSABLE
        ]
        for vulnerability in to_close:
            before = _status_text(vulnerability.status, vulnerability.mute_reason)
            vulnerability.status, vulnerability.mute_reason = Status.AUTO_CLOSED, ""
            vulnerability.closed_at = now
            activities.append(
                _activity(
                    vulnerability,
                    Kind.AUTO_CLOSED,
                    before,
                    Status.AUTO_CLOSED,
                    "The service no longer runs this version, or the advisory no "
                    "longer affects it.",
                )
            )
        result.closed += len(to_close)

        fields = [
            "status",
            "mute_reason",
            "closed_at",
            "reachable",
            "severity",
            "severity_reasons",
            "base_severity",
            "base_score",
            "last_detected",
            "updated_at",
        ]
        for vulnerability in [*to_update, *to_close]:
            vulnerability.updated_at = now
        Vulnerability.objects.bulk_update([*to_update, *to_close], fields, batch_size=500)
        untouched = sorted(set(seen_pks) - {v.pk for v in to_update})
        for start in range(0, len(untouched), _CHUNK):
            Vulnerability.objects.filter(pk__in=untouched[start : start + _CHUNK]).update(
                last_detected=now
            )
        # No conflict is possible: the services are locked, and only matching creates rows.
        created = Vulnerability.objects.bulk_create(to_create, batch_size=1000)
        if any(v.pk is None for v in created):
            # Backends that return no ids from a bulk insert: look the new rows up.
            created = [
                v
                for v in Vulnerability.objects.filter(service_id__in=ids, first_detected=now)
                if (v.service_id, v.advisory_id, v.library, v.version) not in existing
            ]
        result.created += len(created)
        for vulnerability in created:
            activities.append(
                _activity(
                    vulnerability,
                    Kind.DETECTED,
                    "",
                    vulnerability.severity,
                    ", ".join(REASON_TEXT[r] for r in vulnerability.severity_reasons),
                )
            )
        VulnerabilityActivity.objects.bulk_create(activities, batch_size=1000)
        notifications_enqueue_vulnerabilities(activities=activities)


def _activity(
    vulnerability: Vulnerability,
    kind: str,
    from_value: str,
    to_value: str,
    message: str = "",
    actor: User | None = None,
) -> VulnerabilityActivity:
    return VulnerabilityActivity(
        vulnerability=vulnerability,
        kind=kind,
        actor=actor,
        actor_name=VulnerabilityActivity.name_of(actor),
        from_value=from_value[:200],
        to_value=to_value[:200],
        message=message,
    )


def _status_text(status: str, reason: str) -> str:
    return f"{status}:{reason}" if status == Status.MUTED else status


# --- Triage -------------------------------------------------------------------------------

# What people may set; auto_closed is the console's alone.
TRIAGE_STATUSES = (Status.OPEN, Status.IN_PROGRESS, Status.MUTED, Status.REMEDIATED)


def vulnerability_status_set(
    *,
    vulnerability: Vulnerability,
    status: str,
    reason: str = "",
    comment: str = "",
    actor: User | None,
) -> VulnerabilityActivity | None:
    """Set the status (muting needs a reason, nothing else takes one); one activity row with
    the comment as its why. None, and nothing written, when nothing changes."""
    if status not in TRIAGE_STATUSES:
        raise ValidationError(
            {"status": f"Expected one of {', '.join(str(s) for s in TRIAGE_STATUSES)}."}
        )
    if status == Status.MUTED and reason not in Vulnerability.MuteReason.values:
        raise ValidationError(
            {
                "reason": "Muting needs a reason: one of "
                f"{', '.join(Vulnerability.MuteReason.values)}."
            }
        )
    if status != Status.MUTED and reason:
        raise ValidationError({"reason": "Only muting takes a reason."})
    comment = comment.strip()
    if len(comment) > MAX_COMMENT_LENGTH:
        raise ValidationError({"comment": f"At most {MAX_COMMENT_LENGTH} characters."})
    with transaction.atomic():
        locked = Vulnerability.objects.select_for_update().get(pk=vulnerability.pk)
        before = _status_text(locked.status, locked.mute_reason)
        after = _status_text(status, reason)
        if before == after:
            return None
        locked.status, locked.mute_reason = status, reason
        locked.closed_at = timezone.now() if status == Status.REMEDIATED else None
        locked.save(update_fields=["status", "mute_reason", "closed_at", "updated_at"])
        activity = _activity(locked, Kind.STATUS_CHANGED, before, after, comment, actor)
        activity.save()
    vulnerability.refresh_from_db()
    return activity
