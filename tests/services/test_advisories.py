"""OSV version ranges per ecosystem, and importing feeds (idempotent, updates, withdrawals)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from services.advisories import advisories_import, advisory_parse, documents_from_bytes
from services.models import Advisory, AdvisoryPackage
from services.versions import compile_package, is_affected, normalize_name

FEED = Path(__file__).parents[1] / "fixtures" / "osv"


def feed_document(name: str) -> dict[str, Any]:
    return json.loads((FEED / f"{name}.json").read_text())


def feed_zip(path: Path, documents: list[dict[str, Any]]) -> Path:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for document in documents:
            archive.writestr(f"{document['id']}.json", json.dumps(document))
    path.write_bytes(buffer.getvalue())
    return path


def affected(ecosystem: str, version: str, ranges: list[Any], versions: list[str] = ()) -> bool:  # type: ignore[assignment]
    return is_affected(ecosystem, version, compile_package(ecosystem, ranges, versions))


def ecosystem_range(*events: dict[str, str], kind: str = "ECOSYSTEM") -> dict[str, Any]:
    return {"type": kind, "events": list(events)}


@pytest.mark.parametrize(
    ("version", "expected"),
    [("0.0.1", True), ("2.30.0", True), ("2.31.0", False), ("3.0", False)],
)
def test_introduced_zero_opens_from_the_first_version(version: str, expected: bool) -> None:
    ranges = [ecosystem_range({"introduced": "0"}, {"fixed": "2.31.0"})]
    assert affected("PyPI", version, ranges) is expected


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("0.9", True),  # the explicit versions list
        ("1.0", True),
        ("1.1.5", True),
        ("1.2", False),
        ("1.9", False),
        ("2.0", True),
        ("2.1", True),  # last_affected is affected
        ("2.1.0", True),  # the same PEP 440 version
        ("2.1.1", False),
        ("not a version", False),
    ],
)
def test_several_ranges_last_affected_and_versions(version: str, expected: bool) -> None:
    ranges = [
        ecosystem_range(
            {"introduced": "1.0"},
            {"fixed": "1.2"},
            {"introduced": "2.0"},
            {"last_affected": "2.1"},
        )
    ]
    assert affected("PyPI", version, ranges, ["0.9"]) is expected


def test_pre_releases_order_by_pep_440_and_semver() -> None:
    ranges = [ecosystem_range({"introduced": "2.0.0"}, {"fixed": "2.0.1"})]
    assert affected("PyPI", "2.0.1rc1", ranges) is True
    assert affected("PyPI", "2.0.0rc1", ranges) is False
    assert affected("PyPI", "2.0.1", ranges) is False
    npm = [ecosystem_range({"introduced": "0"}, {"fixed": "4.17.21"}, kind="SEMVER")]
    assert affected("npm", "4.17.21-beta.1", npm) is True
    assert affected("npm", "4.17.20", npm) is True
    assert affected("npm", "v4.17.21", npm) is False
    assert affected("npm", "4.17.3", npm) is True  # numeric, not text, order


def test_events_out_of_order_are_sorted_by_version() -> None:
    ranges = [ecosystem_range({"fixed": "1.5"}, {"introduced": "1.0"})]
    assert affected("PyPI", "1.2", ranges) is True
    assert affected("PyPI", "1.6", ranges) is False


def test_git_ranges_are_ignored() -> None:
    ranges = [{"type": "GIT", "events": [{"introduced": "0"}, {"fixed": "abc123"}]}]
    assert affected("PyPI", "1.0", ranges) is False


@pytest.mark.parametrize(
    "name", ["Zope_Interface.Extra", "zope-interface-extra", "ZOPE.interface_extra"]
)
def test_pypi_names_are_normalized_by_pep_503(name: str) -> None:
    assert normalize_name("PyPI", name) == "zope-interface-extra"


def test_parse_keeps_supported_ecosystems_and_drops_git_ranges() -> None:
    parsed = advisory_parse(feed_document("PYSEC-2023-74"))
    assert parsed is not None
    assert parsed.fields["aliases"] == ["CVE-2023-32681", "GHSA-j8r2-6x86-q33q"]
    assert parsed.fields["base_score"] == 6.1
    assert parsed.fields["base_severity"] == "medium"
    assert parsed.packages == [
        {
            "ecosystem": "PyPI",
            "name": "requests",
            "ranges": [
                {"type": "ECOSYSTEM", "events": [{"introduced": "2.3.0"}, {"fixed": "2.31.0"}]}
            ],
            "versions": [],
            "fixed_versions": ["2.31.0"],
        }
    ]
    assert advisory_parse({"id": "X", "modified": "2024-01-01T00:00:00Z", "affected": []}) is None
    assert advisory_parse(["not", "an", "advisory"]) is None


@pytest.mark.django_db
def test_import_zip_is_idempotent_and_skips_unknown_withdrawn(tmp_path: Path) -> None:
    documents = [feed_document(p.stem) for p in sorted(FEED.glob("*.json"))]
    path = feed_zip(tmp_path / "all.zip", documents)
    call_command("import_advisories", str(path), stdout=io.StringIO())
    assert set(Advisory.objects.values_list("osv_id", flat=True)) == {
        "PYSEC-2023-74",
        "GHSA-test-lodash",
        "PYSEC-test-multi",
    }
    lodash = Advisory.objects.get(osv_id="GHSA-test-lodash")
    assert (lodash.ecosystem, lodash.base_severity, lodash.base_score) == ("npm", "high", 7.2)
    assert AdvisoryPackage.objects.get(advisory__osv_id="PYSEC-test-multi").name == (
        "zope-interface-extra"
    )
    before = list(Advisory.objects.values_list("pk", "imported_at").order_by("pk"))
    out = io.StringIO()
    call_command("import_advisories", str(path), stdout=out)
    assert "0 created, 0 updated, 3 unchanged" in out.getvalue()
    assert list(Advisory.objects.values_list("pk", "imported_at").order_by("pk")) == before
    assert AdvisoryPackage.objects.count() == 3


@pytest.mark.django_db
def test_reimport_updates_changed_and_withdraws(tmp_path: Path) -> None:
    document = feed_document("PYSEC-2023-74")
    advisories_import(documents=[document])
    changed = {**document, "modified": "2024-06-01T00:00:00Z", "summary": "Corrected"}
    changed["affected"][0]["ranges"][1]["events"] = [{"introduced": "0"}, {"fixed": "2.32.0"}]
    older = {**document, "modified": "2020-01-01T00:00:00Z", "summary": "Stale"}
    result = advisories_import(documents=[older, changed])
    assert (result.created, result.updated) == (0, 1)
    advisory = Advisory.objects.get(osv_id="PYSEC-2023-74")
    assert advisory.summary == "Corrected"
    assert AdvisoryPackage.objects.get(advisory=advisory).fixed_versions == ["2.32.0"]

    withdrawn = {**changed, "modified": "2024-07-01T00:00:00Z", "withdrawn": "2024-07-01T00:00:00Z"}
    result = advisories_import(documents=[withdrawn])
    assert result.withdrawn == 1
    advisory.refresh_from_db()
    assert advisory.withdrawn is not None
    assert not AdvisoryPackage.objects.filter(advisory=advisory).exists()


def test_documents_from_bytes_refuses_what_is_no_feed() -> None:
    with pytest.raises(ValueError, match=r"neither an OSV all\.zip nor OSV JSON"):
        list(documents_from_bytes(b"<html>", name="feed"))


@pytest.mark.django_db
def test_command_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="No such file"):
        call_command("import_advisories", str(tmp_path / "missing.zip"))
    with pytest.raises(CommandError, match="Only https"):
        call_command("import_advisories", "ftp://example.com/all.zip")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CommandError, match="neither an OSV"):
        call_command("import_advisories", str(bad))
