"""Tracer telemetry (`POST /telemetry/proxy/api/v2/apmtelemetry`): what a service is, what it
loads and which routes it exposes.

The intake calls `telemetry_validate` on the request path and a worker calls
`telemetry_process` later. Everything in a body is attacker-controlled (anyone holding an API
key, or anyone at all on an open agent port): validation rejects what is not a telemetry
envelope, and processing stores what it can and skips the rest, bounded to the model fields,
so a strange body never fails a worker.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any

from django.db import transaction

from services.models import Service, ServiceDependency, ServiceEndpoint
from services.tasks import match_vulnerabilities_on_commit

# Tracers never nest batches; one level of nesting is tolerated, more is refused so that a
# body cannot make validation or processing recurse without limit.
MAX_BATCH_DEPTH = 2

# Bounds on what is kept of free-form parts of the body.
MAX_PRODUCTS = 64
MAX_HOST_KEYS = 32
MAX_METADATA_ENTRIES = 32
MAX_REACHABILITY_VALUE = 16_384
MAX_REACHED = 100

RUNTIME_KEYS = ("language_name", "language_version", "runtime_name", "runtime_version")


class TelemetryError(ValueError):
    """The body is not a tracer telemetry envelope; the message names the field."""


def telemetry_validate(payload: object) -> None:
    """Raise `TelemetryError` unless `payload` (a decoded JSON body) is a telemetry envelope
    whose processed parts have the right types. No database access: this runs in the request."""
    if not isinstance(payload, dict):
        raise TelemetryError("body: expected a JSON object")
    _validate_message(payload, path="", depth=0)
    application = payload.get("application")
    if not isinstance(application, dict):
        raise TelemetryError("application: expected an object")
    # Checked as it will be stored: a name of NUL characters is empty once cleaned.
    if not _text(application.get("service_name"), 200).strip():
        raise TelemetryError("application.service_name: expected a non-empty string")
    if not isinstance(application.get("env", ""), str | None):
        raise TelemetryError("application.env: expected a string")
    if not isinstance(payload.get("host", {}), dict | None):
        raise TelemetryError("host: expected an object")


def _validate_message(message: dict[str, Any], *, path: str, depth: int) -> None:
    request_type = message.get("request_type")
    if not isinstance(request_type, str) or not request_type:
        raise TelemetryError(f"{path}request_type: expected a non-empty string")
    body = message.get("payload")
    if request_type == "message-batch":
        if depth >= MAX_BATCH_DEPTH:
            raise TelemetryError(f"{path}payload: message batches nested too deeply")
        if not isinstance(body, list):
            raise TelemetryError(f"{path}payload: expected a list of messages")
        for index, item in enumerate(body):
            if not isinstance(item, dict):
                raise TelemetryError(f"{path}payload[{index}]: expected an object")
            _validate_message(item, path=f"{path}payload[{index}].", depth=depth + 1)
        return
    # The other request types only count as a sign of life, so their payloads are not checked.
    if request_type not in ("app-started", "app-dependencies-loaded", "app-endpoints"):
        return
    if not isinstance(body, dict):
        raise TelemetryError(f"{path}payload: expected an object")
    if request_type == "app-started":
        if not isinstance(body.get("products"), dict | None):
            raise TelemetryError(f"{path}payload.products: expected an object")
        if not isinstance(body.get("dependencies"), list | None):
            raise TelemetryError(f"{path}payload.dependencies: expected a list")
        return
    key = "dependencies" if request_type == "app-dependencies-loaded" else "endpoints"
    if not isinstance(body.get(key), list):
        raise TelemetryError(f"{path}payload.{key}: expected a list")


@dataclass
class _Collected:
    """What one body says, gathered from all its messages before anything is written."""

    products: dict[str, Any] | None = None
    appsec_enabled: bool = False
    # Keyed by the unique fields, so a batch that repeats an entry upserts it once
    # (PostgreSQL refuses an INSERT ... ON CONFLICT that touches a row twice).
    dependencies: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    endpoints: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)


def telemetry_process(*, payload: dict[str, Any], received_at: datetime) -> Service:
    """Store what a telemetry body says about its service: the service itself, its
    dependencies (with SCA reachability) and its endpoints. Processing the same body again
    leaves the same rows, and an older body processed after a newer one (a retried batch)
    does not overwrite what the newer one stored."""
    telemetry_validate(payload)
    application: dict[str, Any] = payload["application"]
    collected = _Collected()
    _collect(payload, collected)

    with transaction.atomic():
        service, _ = Service.objects.select_for_update().get_or_create(
            name=_text(application["service_name"], 200),
            env=_text(application.get("env"), 100),
        )
        _service_update(
            service=service,
            application=application,
            host=payload.get("host"),
            collected=collected,
            received_at=received_at,
        )
        known = (
            set(service.dependencies.values_list("name", "version"))
            if collected.dependencies
            else set()
        )
        _dependencies_upsert(
            service=service, dependencies=collected.dependencies, received_at=received_at
        )
        if set(collected.dependencies) - known:
            # A library or version the service did not run before: match it.
            match_vulnerabilities_on_commit([service.pk])
        _endpoints_upsert(service=service, endpoints=collected.endpoints, received_at=received_at)
    return service


def _collect(message: dict[str, Any], collected: _Collected) -> None:
    request_type = message["request_type"]
    body: Any = message.get("payload")
    if request_type == "message-batch":
        for item in body:
            _collect(item, collected)
    elif request_type == "app-started":
        products = body.get("products") or {}
        collected.products = _products(products)
        # A tracer that starts with ASM on says so here. The reverse is not evidence of ASM
        # being off for good: remote config can turn it on after start, and the spans'
        # `_dd.appsec.enabled` is the authority then. So telemetry only ever turns the flag on.
        appsec = products.get("appsec")
        collected.appsec_enabled = isinstance(appsec, dict) and appsec.get("enabled") is True
        _collect_dependencies(body.get("dependencies") or [], collected)
    elif request_type == "app-dependencies-loaded":
        _collect_dependencies(body["dependencies"], collected)
    elif request_type == "app-endpoints":
        _collect_endpoints(body["endpoints"], collected)
    # Heartbeats, closing, metrics, sketches, logs, integration and configuration changes,
    # and request types added by newer tracers only count as a sign of life.


def _collect_dependencies(entries: Iterable[object], collected: _Collected) -> None:
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        name = _text(entry.get("name"), 200)
        if not name:
            continue
        version = _text(entry.get("version"), 100)
        collected.dependencies[(name, version)] = _reachability(entry.get("metadata"))


def _reachability(metadata: object) -> list[dict[str, Any]]:
    """SCA reachability from a dependency's `metadata`: entries of type "reachability" whose
    `value` is a JSON string, `{"id": "GHSA-...", "reached": [{"path", "symbol", "line"}]}`.

    Only the fields the console uses are kept, cleaned like every other string, so the stored
    JSON has one shape and nothing PostgreSQL's jsonb would refuse (NUL characters).
    """
    if not isinstance(metadata, list):
        return []
    found = []
    for entry in metadata[:MAX_METADATA_ENTRIES]:
        if not isinstance(entry, dict) or entry.get("type") != "reachability":
            continue
        value = entry.get("value")
        if not isinstance(value, str) or len(value) > MAX_REACHABILITY_VALUE:
            continue
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):
            continue
        if not isinstance(parsed, dict) or not _text(parsed.get("id"), 100):
            continue
        reached = parsed.get("reached")
        found.append(
            {
                "id": _text(parsed["id"], 100),
                "reached": [
                    {
                        "path": _text(place.get("path"), 500),
                        "symbol": _text(place.get("symbol"), 200),
                        "line": _small_int(place.get("line")),
                    }
                    for place in (reached if isinstance(reached, list) else [])[:MAX_REACHED]
                    if isinstance(place, dict)
                ],
            }
        )
    return found


def _collect_endpoints(entries: Iterable[object], collected: _Collected) -> None:
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        method = _text(entry.get("method"), 16)
        path = _text(entry.get("path"), 500)
        if method and path:
            collected.endpoints[(method, path)] = (
                _text(entry.get("operation_name"), 200),
                _text(entry.get("resource_name"), 500),
            )


def _service_update(
    *,
    service: Service,
    application: dict[str, Any],
    host: object,
    collected: _Collected,
    received_at: datetime,
) -> None:
    fields = []
    # Only the newest news describes the service: a retried older batch must not bring back
    # the version the service ran before.
    if service.last_seen is None or received_at >= service.last_seen:
        service.last_seen = received_at
        service.version = _text(application.get("service_version"), 100)
        service.language = _text(application.get("language_name"), 32)
        service.tracer_version = _text(application.get("tracer_version"), 64)
        service.runtime = {
            key: _text(application[key], 64)
            for key in RUNTIME_KEYS
            if isinstance(application.get(key), str)
        }
        fields += ["last_seen", "version", "language", "tracer_version", "runtime"]
        if isinstance(host, dict):
            service.host = {
                _text(key, 64): _text(value, 256)
                for key, value in islice(host.items(), MAX_HOST_KEYS)
                if isinstance(value, str) and _text(key, 64)
            }
            fields.append("host")
    if collected.products is not None and (
        service.app_started_at is None or received_at >= service.app_started_at
    ):
        # The console's clock rather than the envelope's `tracer_time`: a skewed host clock
        # would otherwise order restarts wrongly against `last_seen`.
        service.products = collected.products
        service.app_started_at = received_at
        fields += ["products", "app_started_at"]
    if collected.appsec_enabled and not service.asm_enabled:
        service.asm_enabled = True
        fields.append("asm_enabled")
    if fields:
        service.save(update_fields=fields)


def _products(products: dict[str, Any]) -> dict[str, Any]:
    """`{name: {enabled, version, error}}` from app-started's `products`."""
    kept: dict[str, Any] = {}
    for name, product in islice(products.items(), MAX_PRODUCTS):
        if not isinstance(product, dict) or not _text(name, 64):
            continue
        error = product.get("error")
        kept[_text(name, 64)] = {
            "enabled": product.get("enabled") is True,
            "version": _text(product.get("version"), 64),
            "error": (
                {"code": _small_int(error.get("code")), "message": _text(error.get("message"), 500)}
                if isinstance(error, dict)
                else None
            ),
        }
    return kept


def _dependencies_upsert(
    *,
    service: Service,
    dependencies: dict[tuple[str, str], list[dict[str, Any]]],
    received_at: datetime,
) -> None:
    if not dependencies:
        return
    # Rows a newer body already refreshed keep that body's reachability. Usually none: the
    # query serves retried batches that arrive out of order.
    newer = set(
        ServiceDependency.objects.filter(service=service, last_seen__gt=received_at).values_list(
            "name", "version"
        )
    )
    ServiceDependency.objects.bulk_create(
        [
            ServiceDependency(
                service=service,
                name=name,
                version=version,
                reachability=reachability,
                last_seen=received_at,
            )
            for (name, version), reachability in dependencies.items()
            if (name, version) not in newer
        ],
        update_conflicts=True,
        unique_fields=["service", "name", "version"],
        update_fields=["reachability", "last_seen"],
    )


def _endpoints_upsert(
    *,
    service: Service,
    endpoints: dict[tuple[str, str], tuple[str, str]],
    received_at: datetime,
) -> None:
    if not endpoints:
        return
    newer = set(
        ServiceEndpoint.objects.filter(service=service, last_seen__gt=received_at).values_list(
            "method", "path"
        )
    )
    ServiceEndpoint.objects.bulk_create(
        [
            ServiceEndpoint(
                service=service,
                method=method,
                path=path,
                operation_name=operation_name,
                resource_name=resource_name,
                last_seen=received_at,
            )
            for (method, path), (operation_name, resource_name) in endpoints.items()
            if (method, path) not in newer
        ],
        update_conflicts=True,
        unique_fields=["service", "method", "path"],
        update_fields=["operation_name", "resource_name", "last_seen"],
    )


def _text(value: object, limit: int) -> str:
    """A string fit for a `CharField(max_length=limit)` and for PostgreSQL, which refuses NUL
    characters and lone surrogates (valid in JSON, not in UTF-8); "" for anything else."""
    if not isinstance(value, str):
        return ""
    cleaned = value[: limit * 2].replace("\x00", "")
    return cleaned.encode("utf-8", "replace").decode("utf-8")[:limit]


def _small_int(value: object) -> int | None:
    # bool is an int in Python, and True is no line number.
    if isinstance(value, int) and not isinstance(value, bool) and -(2**31) <= value < 2**31:
        return value
    return None
