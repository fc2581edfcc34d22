"""Each ecosystem's own version rules, through the libraries that define them: `packaging`
(PEP 440 versions, PEP 503 names) for PyPI and `semver` (Semantic Versioning 2.0, which npm
follows) for npm; and OSV's range evaluation on top of them.

Nothing here compares version strings by hand: a version a library cannot parse matches no
range (it can still match an advisory's explicit `versions` list, compared as text).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import semver
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from services.models import Ecosystem

# Languages as tracers name them (`application.language_name`) -> the OSV ecosystem.
LANGUAGE_ECOSYSTEMS = {
    "python": Ecosystem.PYPI,
    "nodejs": Ecosystem.NPM,
    "node": Ecosystem.NPM,
    "javascript": Ecosystem.NPM,
}


class Comparable(Protocol):
    def __lt__(self, other: Any, /) -> bool: ...
    def __le__(self, other: Any, /) -> bool: ...


def normalize_name(ecosystem: str, name: str) -> str:
    """The name advisories use: PEP 503 for PyPI (case, runs of `-`, `_` and `.`); npm names
    are lowercase by the registry's rules, so case is folded there too."""
    name = name.strip()
    if ecosystem == Ecosystem.PYPI:
        return str(canonicalize_name(name))
    return name.lower()


@lru_cache(maxsize=65_536)
def parse_version(ecosystem: str, text: str) -> Comparable | None:
    """The version as its ecosystem orders it, or None when it is not a valid version."""
    text = text.strip()
    if not text:
        return None
    if ecosystem == Ecosystem.PYPI:
        try:
            return Version(text)
        except InvalidVersion:
            return None
    if ecosystem == Ecosystem.NPM:
        # npm accepts a leading "v" (and "=") and strips it; semver itself does not.
        try:
            return semver.Version.parse(re.sub(r"^[=v]+", "", text))
        except (ValueError, TypeError):
            return None
    return None


@dataclass(frozen=True, slots=True)
class _Event:
    kind: str  # introduced, fixed or last_affected
    version: Comparable | None  # None for introduced "0": before every version


@dataclass(frozen=True, slots=True)
class CompiledPackage:
    """An advisory's affected package, parsed once for many checks."""

    ranges: tuple[tuple[_Event, ...], ...]
    versions: frozenset[str]
    parsed_versions: tuple[Comparable, ...]


def compile_package(
    ecosystem: str, ranges: Sequence[dict[str, Any]], versions: Iterable[str]
) -> CompiledPackage:
    compiled = []
    for osv_range in ranges:
        if osv_range.get("type") not in ("ECOSYSTEM", "SEMVER"):
            continue
        events = []
        for event in osv_range.get("events") or ():
            if not isinstance(event, dict):
                continue
            for kind in ("introduced", "fixed", "last_affected"):
                value = event.get(kind)
                if not isinstance(value, str):
                    continue
                if kind == "introduced" and value == "0":
                    events.append(_Event(kind, None))
                    continue
                parsed = parse_version(ecosystem, value)
                if parsed is not None:
                    events.append(_Event(kind, parsed))
        # OSV's evaluation walks the events in version order; "0" comes first.
        events.sort(key=lambda e: _Order(e.version))
        compiled.append(tuple(events))
    texts = frozenset(v for v in versions if isinstance(v, str))
    parsed_list = [parse_version(ecosystem, v) for v in texts]
    return CompiledPackage(
        ranges=tuple(compiled),
        versions=texts,
        parsed_versions=tuple(p for p in parsed_list if p is not None),
    )


class _Order:
    """Wraps a version for sorting, None first (introduced "0")."""

    __slots__ = ("version",)

    def __init__(self, version: Comparable | None) -> None:
        self.version = version

    def __lt__(self, other: _Order) -> bool:
        if self.version is None:
            return other.version is not None
        if other.version is None:
            return False
        return bool(self.version < other.version)


def _in_range(version: Comparable, events: tuple[_Event, ...]) -> bool:
    # OSV's reference algorithm: in version order, `introduced` at or below the version opens,
    # `fixed` at or below it and `last_affected` strictly below it close.
    affected = False
    for event in events:
        if event.kind == "introduced":
            if event.version is None or event.version <= version:
                affected = True
        elif event.kind == "fixed":
            if event.version is not None and event.version <= version:
                affected = False
        elif event.version is not None and event.version < version:
            affected = False
    return affected


def is_affected(ecosystem: str, version_text: str, package: CompiledPackage) -> bool:
    """Whether the version is affected: listed in `versions`, or in one of the ranges."""
    if version_text in package.versions:
        return True
    version = parse_version(ecosystem, version_text)
    if version is None:
        return False
    # "1.0" and "1.0.0" are one PEP 440 version, listed under either spelling.
    if any(not (listed < version or version < listed) for listed in package.parsed_versions):
        return True
    return any(_in_range(version, events) for events in package.ranges)
