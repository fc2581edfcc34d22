"""Dependencies of services without a tracer, from an uploaded manifest or lock file:
requirements.txt, poetry.lock, uv.lock, package-lock.json or a CycloneDX JSON SBOM.

Parsers take bytes and return the pinned (ecosystem, name, version) entries, or raise
`UploadError` with a message that names the problem (and the line, where there is one).
Requirements that pin no exact version cannot be matched and are returned as skipped.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import orjson
from django.db import transaction
from django.utils import timezone
from packaging.requirements import InvalidRequirement, Requirement

from services.models import Ecosystem, Service, ServiceDependency
from services.tasks import match_vulnerabilities_on_commit

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_DEPENDENCIES = 20_000
MAX_DEPTH = 64


class UploadError(ValueError):
    """The file is not what its format says; the message names the problem."""


@dataclass(frozen=True, slots=True)
class Entry:
    ecosystem: str
    name: str
    version: str


@dataclass
class Parsed:
    entries: list[Entry] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UploadError(f"not UTF-8 text (byte {exc.start})") from None


def parse_requirements(data: bytes) -> Parsed:
    parsed = Parsed()
    logical: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(_decode(data).splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append((start, pending + line))
        pending = ""
    if pending:
        logical.append((start, pending))
    for number, line in logical:
        line = line.strip()
        if not line or line.startswith("-"):
            # Options (-r, -c, -e, --index-url, --hash continuation lines) name no pin.
            continue
        # Hashes follow the requirement on the same logical line.
        requirement_text = line.split(" --", 1)[0].strip()
        try:
            requirement = Requirement(requirement_text)
        except InvalidRequirement as exc:
            raise UploadError(f"line {number}: {exc}") from None
        pins = [s.version for s in requirement.specifier if s.operator in ("==", "===")]
        if len(pins) != 1 or "*" in pins[0] or requirement.url:
            parsed.skipped.append(requirement_text[:200])
            continue
        parsed.entries.append(Entry(Ecosystem.PYPI, requirement.name, pins[0]))
    return parsed


def _toml_packages(data: bytes, what: str) -> Parsed:
    try:
        document = tomllib.loads(_decode(data))
    except tomllib.TOMLDecodeError as exc:
        raise UploadError(f"not valid TOML: {exc}") from None
    packages = document.get("package")
    if not isinstance(packages, list):
        raise UploadError(f"no [[package]] tables: not a {what}")
    parsed = Parsed()
    for index, package in enumerate(packages):
        if not isinstance(package, dict):
            raise UploadError(f"package {index}: expected a table")
        name, version = package.get("name"), package.get("version")
        if not isinstance(name, str) or not name:
            raise UploadError(f"package {index}: no name")
        if not isinstance(version, str) or not version:
            # uv.lock's own project (a virtual or editable root) has no version.
            parsed.skipped.append(name[:200])
            continue
        parsed.entries.append(Entry(Ecosystem.PYPI, name, version))
    return parsed


def parse_poetry_lock(data: bytes) -> Parsed:
    return _toml_packages(data, "poetry.lock")


def parse_uv_lock(data: bytes) -> Parsed:
    return _toml_packages(data, "uv.lock")


def _json(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UploadError(f"not valid JSON: {exc}") from None


def parse_package_lock(data: bytes) -> Parsed:
    document = _json(data)
    if not isinstance(document, dict):
        raise UploadError("expected a JSON object")
    parsed = Parsed()
    packages = document.get("packages")
    if isinstance(packages, dict):
        # lockfileVersion 2 and 3: {"node_modules/a/node_modules/b": {"version": ...}}.
        for path, package in packages.items():
            if not path or not isinstance(package, dict) or package.get("link"):
                continue
            if "node_modules/" not in path:
                continue  # workspace folders
            name = package.get("name") or path.rsplit("node_modules/", 1)[-1]
            version = package.get("version")
            if not isinstance(name, str) or not isinstance(version, str):
                raise UploadError(f"packages[{path[:100]!r}]: expected a version string")
            parsed.entries.append(Entry(Ecosystem.NPM, name, version))
        return parsed
    dependencies = document.get("dependencies")
    if not isinstance(dependencies, dict):
        raise UploadError('neither "packages" nor "dependencies": not a package-lock.json')

    # lockfileVersion 1: nested {"name": {"version", "dependencies": {...}}}.
    def walk(tree: dict[str, Any], depth: int) -> Iterator[Entry]:
        if depth > MAX_DEPTH:
            raise UploadError("dependencies nested too deeply")
        for name, package in tree.items():
            if not isinstance(package, dict) or not isinstance(package.get("version"), str):
                raise UploadError(f"dependencies[{name[:100]!r}]: expected a version string")
            yield Entry(Ecosystem.NPM, name, package["version"])
            nested = package.get("dependencies")
            if isinstance(nested, dict):
                yield from walk(nested, depth + 1)

    parsed.entries.extend(walk(dependencies, 0))
    return parsed


_PURL_ECOSYSTEMS = {"pypi": Ecosystem.PYPI, "npm": Ecosystem.NPM}


def parse_cyclonedx(data: bytes) -> Parsed:
    document = _json(data)
    if not isinstance(document, dict) or document.get("bomFormat") != "CycloneDX":
        raise UploadError('not a CycloneDX JSON SBOM (no "bomFormat": "CycloneDX")')
    parsed = Parsed()

    def walk(components: object, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise UploadError("components nested too deeply")
        if not isinstance(components, list):
            raise UploadError("components: expected a list")
        for index, component in enumerate(components):
            if not isinstance(component, dict):
                raise UploadError(f"components[{index}]: expected an object")
            purl = component.get("purl")
            if isinstance(purl, str) and purl.startswith("pkg:"):
                kind = purl[4:].split("/", 1)[0].lower()
                ecosystem = _PURL_ECOSYSTEMS.get(kind)
                name, version = component.get("name"), component.get("version")
                pinned = isinstance(name, str) and isinstance(version, str) and bool(version)
                if ecosystem is None or not pinned:
                    parsed.skipped.append(purl[:200])
                else:
                    group = component.get("group")
                    if ecosystem == Ecosystem.NPM and isinstance(group, str) and group:
                        name = f"{unquote(group)}/{name}"
                    parsed.entries.append(Entry(ecosystem, str(name), str(version)))
            if "components" in component:
                walk(component["components"], depth + 1)

    walk(document.get("components", []), 0)
    return parsed


FORMATS: dict[str, Callable[[bytes], Parsed]] = {
    "requirements": parse_requirements,
    "poetry_lock": parse_poetry_lock,
    "uv_lock": parse_uv_lock,
    "package_lock": parse_package_lock,
    "cyclonedx": parse_cyclonedx,
}


def format_for_filename(filename: str) -> str | None:
    """The format a file's usual name says, or None."""
    name = filename.rsplit("/", 1)[-1].lower()
    if name.endswith(".txt"):
        return "requirements"
    if name == "poetry.lock":
        return "poetry_lock"
    if name == "uv.lock":
        return "uv_lock"
    if name in ("package-lock.json", "npm-shrinkwrap.json"):
        return "package_lock"
    if name.endswith((".cdx.json", "bom.json", "sbom.json")):
        return "cyclonedx"
    return None


def dependencies_parse(*, data: bytes, file_format: str) -> Parsed:
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(f"larger than {MAX_UPLOAD_BYTES} bytes")
    parsed = FORMATS[file_format](data)
    if len(parsed.entries) > MAX_DEPENDENCIES:
        raise UploadError(f"more than {MAX_DEPENDENCIES} dependencies")
    return parsed


@dataclass
class UploadResult:
    service: Service
    stored: int
    skipped: list[str]


def dependencies_upload(*, service_name: str, env: str, parsed: Parsed) -> UploadResult:
    """Store an upload's dependencies for the service (created when new) as seen now, which
    makes them the current versions; then match the service once this commits."""
    now = timezone.now()
    unique = {(entry.name[:200], entry.version[:100]): entry for entry in parsed.entries}
    with transaction.atomic():
        service, _ = Service.objects.select_for_update().get_or_create(name=service_name, env=env)
        ServiceDependency.objects.bulk_create(
            [
                ServiceDependency(
                    service=service,
                    name=name,
                    version=version,
                    ecosystem=entry.ecosystem,
                    last_seen=now,
                )
                for (name, version), entry in unique.items()
            ],
            update_conflicts=True,
            unique_fields=["service", "name", "version"],
            update_fields=["ecosystem", "last_seen"],
            batch_size=1000,
        )
        match_vulnerabilities_on_commit([service.pk])
    return UploadResult(service=service, stored=len(unique), skipped=parsed.skipped)
