"""Remote configuration for tracers (`POST /v0.7/config`): the denylist, as `ASM_DATA`.

The console answers as the Datadog agent would, in the TUF shape of PROTOCOL.md section 8 with
no signatures (tracers check only hashes and lengths). Two files carry the active denylist:

    datadog/2/ASM_DATA/blocked_ips/config     rules_data `blocked_ips` (ip_with_expiration)
    datadog/2/ASM_DATA/blocked_users/config   rules_data `blocked_users` (data_with_expiration)

which the tracer's WAF feeds to its built-in rules blk-001-001 (IP) and blk-001-002 (user).

How the tracer (libdatadog's fetcher under ddtrace 4.x) reads an answer, and so why this one is
built the way it is:
- A body of 3 bytes or fewer (`{}`) means "nothing changed": the tracer keeps what it holds.
  So `{}` is only answered when the tracer already holds exactly the files it should.
- Otherwise the tracer keeps only the paths listed in `client_configs` and drops the rest; a
  dropped ASM_DATA file is removed from its WAF (ddtrace passes it on with content None). A list
  that became empty is therefore served by leaving its file out, which unblocks everyone on it.
- A file whose sha256 matches the one the tracer holds is skipped; any other listed file must
  come with its content in `target_files`, or the tracer rejects the whole answer.
- Versions (`custom.v`, `signed.version`) are not compared by the tracer, only reported back in
  `config_states` and `targets_version`. They follow the denylist anyway, see `_table_versions`.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from django.db.models import Max, Q, QuerySet

from signals.denylist import denylist_entries
from signals.models import DenylistEntry

logger = logging.getLogger(__name__)

PRODUCT_ASM_DATA = "ASM_DATA"
BLOCKED_IPS_PATH = "datadog/2/ASM_DATA/blocked_ips/config"
BLOCKED_USERS_PATH = "datadog/2/ASM_DATA/blocked_users/config"
# Nothing is signed, so a TUF expiry would protect nothing; a fixed one keeps equal answers
# byte-identical.
TARGETS_EXPIRES = "2099-01-01T00:00:00Z"
# Echoed back by tracers as backend_client_state; the console keeps no per-client state.
OPAQUE_BACKEND_STATE = base64.b64encode(b"asm-console").decode()


class RemoteConfigRequestError(ValueError):
    """The request is not a remote-configuration request; the message names the field."""


@dataclass(frozen=True)
class ConfigRequest:
    """What the console needs from a tracer's poll."""

    products: frozenset[str]
    targets_version: int
    # (product, config id) -> version the tracer applied, from client.state.config_states.
    config_versions: dict[tuple[str, str], int]
    # path -> sha256 of every file the tracer holds, from cached_target_files.
    cached: dict[str, str]


@dataclass(frozen=True)
class TargetFile:
    path: str
    config_id: str
    content: bytes
    version: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


# --- the request -------------------------------------------------------------------------------


_JSON_NAMES = {dict: "an object", list: "an array", str: "a string", int: "an integer"}


def _expect(value: Any, name: str, kind: type, *, optional: bool = True) -> Any:
    """`value` when it is of JSON type `kind` (or null and optional); else the error naming it."""
    if value is None and optional:
        return None
    # bool is an int to Python, never to JSON.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise RemoteConfigRequestError(f"{name}: expected {_JSON_NAMES[kind]}")
    return value


def _version(value: Any, name: str) -> int:
    number = _expect(value, name, int)
    if number is None:
        return 0
    if not 0 <= number < 2**63:
        raise RemoteConfigRequestError(f"{name}: expected an integer from 0 to 2**63-1")
    return int(number)


def config_request_parse(document: Any) -> ConfigRequest:
    """The parts of a tracer's request the answer depends on, checked for type (what the
    answer does not use is not looked at). Raises RemoteConfigRequestError."""
    _expect(document, "body", dict, optional=False)
    client = _expect(document.get("client"), "client", dict, optional=False)

    products = _expect(client.get("products"), "client.products", list) or []
    for index, product in enumerate(products):
        _expect(product, f"client.products[{index}]", str, optional=False)

    state = _expect(client.get("state"), "client.state", dict) or {}
    targets_version = _version(state.get("targets_version"), "client.state.targets_version")
    config_versions: dict[tuple[str, str], int] = {}
    config_states = _expect(state.get("config_states"), "client.state.config_states", list) or []
    for index, config_state in enumerate(config_states):
        where = f"client.state.config_states[{index}]"
        _expect(config_state, where, dict, optional=False)
        config_id = _expect(config_state.get("id"), f"{where}.id", str, optional=False)
        product = _expect(config_state.get("product"), f"{where}.product", str, optional=False)
        config_versions[(product, config_id)] = _version(
            config_state.get("version"), f"{where}.version"
        )

    cached: dict[str, str] = {}
    cached_files = _expect(document.get("cached_target_files"), "cached_target_files", list) or []
    for index, cached_file in enumerate(cached_files):
        where = f"cached_target_files[{index}]"
        _expect(cached_file, where, dict, optional=False)
        path = _expect(cached_file.get("path"), f"{where}.path", str, optional=False)
        _version(cached_file.get("length"), f"{where}.length")
        hashes = _expect(cached_file.get("hashes"), f"{where}.hashes", list) or []
        for hash_index, file_hash in enumerate(hashes):
            hash_where = f"{where}.hashes[{hash_index}]"
            _expect(file_hash, hash_where, dict, optional=False)
            algorithm = _expect(file_hash.get("algorithm"), f"{hash_where}.algorithm", str)
            digest = _expect(file_hash.get("hash"), f"{hash_where}.hash", str)
            if algorithm == "sha256" and digest:
                cached[path] = digest.lower()
        # A file held without a sha256 counts as held with unknown content: it is resent.
        cached.setdefault(path, "")

    return ConfigRequest(
        products=frozenset(products),
        targets_version=targets_version,
        config_versions=config_versions,
        cached=cached,
    )


# --- the denylist ------------------------------------------------------------------------------


def denylist_served(*, now: datetime) -> QuerySet[DenylistEntry]:
    """The entries tracers block now: those not expired."""
    return denylist_entries(now=now)


def _expiration(entry: DenylistEntry) -> int:
    # Unix seconds; 0 is "never" to the WAF, which also drops an entry once it expires, before
    # the tracer polls again.
    return int(entry.expires_at.timestamp()) if entry.expires_at else 0


def _millis(moment: datetime | None) -> int:
    return int(moment.timestamp() * 1000) if moment else 0


def _table_versions(*, now: datetime) -> dict[str, int]:
    """Kind -> the version of its file, in milliseconds: the last moment its content changed
    as the table shows it, which is the latest of an entry's creation or edit (updated_at) and
    of an entry's expiry that has passed. Equal for equal tables, larger after any change the
    table records. A deleted row leaves no trace: `_bumped` covers that for the tracers that
    held the earlier content."""
    rows = (
        DenylistEntry.objects.order_by()
        .values("kind")
        .annotate(
            updated=Max("updated_at"),
            expired=Max("expires_at", filter=Q(expires_at__lte=now)),
        )
    )
    return {str(row["kind"]): max(_millis(row["updated"]), _millis(row["expired"])) for row in rows}


def _rules_data(entries: Iterable[DenylistEntry], *, kind: str) -> list[dict[str, Any]]:
    data = []
    for entry in entries:
        value = entry.value.strip()
        if kind == DenylistEntry.Kind.IP:
            # One unparsable value would make the WAF refuse the whole list: skip it instead.
            try:
                value = str(ipaddress.ip_network(value, strict=False))
            except ValueError:
                logger.warning("denylist entry %s: %r is not an IP or network", entry.pk, value)
                continue
            if value.endswith(("/32", "/128")):
                value = value.rsplit("/", 1)[0]
        elif not value:
            continue
        data.append({"value": value, "expiration": _expiration(entry)})
    return sorted(data, key=lambda item: (item["value"], item["expiration"]))


_FILES = (
    (DenylistEntry.Kind.IP, BLOCKED_IPS_PATH, "blocked_ips", "ip_with_expiration"),
    (DenylistEntry.Kind.USER, BLOCKED_USERS_PATH, "blocked_users", "data_with_expiration"),
)


def denylist_files(*, now: datetime, versions: dict[str, int] | None = None) -> list[TargetFile]:
    """The ASM_DATA files for the active denylist: one per kind that has entries. `versions`
    saves a query when the caller already has `_table_versions`."""
    entries = list(denylist_served(now=now))
    if versions is None:
        versions = _table_versions(now=now)
    files = []
    for kind, path, config_id, data_type in _FILES:
        data = _rules_data((e for e in entries if e.kind == kind), kind=kind)
        if not data:
            continue
        document = {"rules_data": [{"id": config_id, "type": data_type, "data": data}]}
        files.append(
            TargetFile(
                path=path,
                config_id=config_id,
                content=json.dumps(document, separators=(",", ":"), sort_keys=True).encode(),
                version=versions.get(kind, 0),
            )
        )
    return files


# --- the answer --------------------------------------------------------------------------------


def _bumped(version: int, *, held: int | None) -> int:
    """A version above the one the tracer holds, for content it does not hold: the table's
    version alone goes down when its newest row is deleted."""
    return version if held is None else max(version, held + 1)


def _targets(files: list[TargetFile], *, version: int) -> str:
    signed = {
        "_type": "targets",
        "custom": {"opaque_backend_state": OPAQUE_BACKEND_STATE},
        "expires": TARGETS_EXPIRES,
        "spec_version": "1.0.0",
        "targets": {
            f.path: {
                "custom": {"v": f.version},
                "hashes": {"sha256": f.sha256},
                "length": len(f.content),
            }
            for f in files
        },
        "version": version,
    }
    document = {"signed": signed, "signatures": []}
    return base64.b64encode(json.dumps(document, sort_keys=True).encode()).decode()


def remote_config_answer(*, config_request: ConfigRequest, now: datetime) -> dict[str, Any]:
    """The answer to one poll: `{}` when the tracer holds what it should (or wants no
    ASM_DATA), else every file it should hold, with content for those it does not."""
    if PRODUCT_ASM_DATA not in config_request.products:
        return {}
    versions = _table_versions(now=now)
    wanted = denylist_files(now=now, versions=versions)
    cached = config_request.cached
    if {f.path: f.sha256 for f in wanted} == cached:
        return {}

    files = []
    for target in wanted:
        held = config_request.config_versions.get((PRODUCT_ASM_DATA, target.config_id))
        if cached.get(target.path) == target.sha256:
            # Unchanged for this tracer: keep announcing the version it applied.
            version = held if held is not None else target.version
        else:
            version = _bumped(target.version, held=held)
        files.append(replace(target, version=version))

    # Something changes for this tracer (else `{}` above), so its targets version goes up.
    table_version = max([*versions.values(), *(f.version for f in files), 1])
    version = _bumped(table_version, held=config_request.targets_version or None)
    return {
        "roots": [],
        "targets": _targets(files, version=version),
        "target_files": [
            {"path": f.path, "raw": base64.b64encode(f.content).decode()}
            for f in files
            if cached.get(f.path) != f.sha256
        ],
        "client_configs": [f.path for f in files],
    }
