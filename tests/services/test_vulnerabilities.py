"""Matching dependencies to advisories: auto-close, adjusted severity, triage, uploads, the
API and the pages (permissions, escaping)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from services.advisories import advisories_import
from services.models import Service, ServiceDependency, Vulnerability, VulnerabilityActivity
from services.vulnerabilities import (
    adjusted_severity,
    vulnerabilities_match,
    vulnerability_status_set,
)
from tests.factories import ServiceFactory
from traces.models import SecurityEvent

FEED = Path(__file__).parents[1] / "fixtures" / "osv"
pytestmark = pytest.mark.django_db


def load_feed() -> None:
    advisories_import(documents=[json.loads(p.read_text()) for p in sorted(FEED.glob("*.json"))])


def depend(service: Service, name: str, version: str, *, ago: int = 0, **fields: Any) -> None:
    ServiceDependency.objects.create(
        service=service,
        name=name,
        version=version,
        last_seen=timezone.now() - timedelta(minutes=ago),
        **fields,
    )


@pytest.fixture
def shop() -> Service:
    load_feed()
    return ServiceFactory.create(name="shop", env="prod", language="python")


def test_match_creates_one_vulnerability_with_a_detected_row(shop: Service) -> None:
    depend(shop, "Requests", "2.30.0")
    depend(shop, "flask", "2.0.0")  # only a withdrawn advisory names flask
    result = vulnerabilities_match()
    assert result.created == 1
    vulnerability = Vulnerability.objects.get()
    assert (vulnerability.library, vulnerability.version, vulnerability.advisory.osv_id) == (
        "requests",
        "2.30.0",
        "PYSEC-2023-74",
    )
    assert (vulnerability.status, vulnerability.base_severity, vulnerability.base_score) == (
        "open",
        "medium",
        6.1,
    )
    assert list(VulnerabilityActivity.objects.values_list("kind", "to_value")) == [
        ("detected", "medium")
    ]
    again = vulnerabilities_match()
    assert (again.created, again.closed) == (0, 0)
    assert VulnerabilityActivity.objects.count() == 1


def test_names_differing_by_case_or_separators_match(shop: Service) -> None:
    depend(shop, "zope.interface_EXTRA", "2.1")
    vulnerabilities_match()
    assert Vulnerability.objects.get().library == "zope-interface-extra"


def test_npm_dependencies_match_semver_ranges(db: None) -> None:
    load_feed()
    service = ServiceFactory.create(name="front", language="nodejs")
    depend(service, "lodash", "4.17.20")
    depend(service, "lodash-es", "4.17.20")
    vulnerabilities_match()
    assert list(Vulnerability.objects.values_list("ecosystem", "library")) == [("npm", "lodash")]


def test_a_version_change_auto_closes_and_a_return_reopens(shop: Service) -> None:
    depend(shop, "requests", "2.30.0", ago=10)
    vulnerabilities_match()
    vulnerability = Vulnerability.objects.get()
    vulnerability_status_set(
        vulnerability=vulnerability, status="muted", reason="accepted_risk", actor=None
    )
    depend(shop, "requests", "2.31.0")
    assert vulnerabilities_match().closed == 1
    vulnerability.refresh_from_db()
    assert (vulnerability.status, vulnerability.mute_reason) == ("auto_closed", "")
    assert vulnerability.closed_at is not None
    closed = VulnerabilityActivity.objects.get(kind="auto_closed")
    assert (closed.from_value, closed.to_value) == ("muted:accepted_risk", "auto_closed")

    ServiceDependency.objects.filter(version="2.30.0").update(
        last_seen=timezone.now() + timedelta(minutes=1)
    )
    assert vulnerabilities_match().reopened == 1
    vulnerability.refresh_from_db()
    assert vulnerability.status == "open"


def test_a_withdrawn_advisory_auto_closes(shop: Service) -> None:
    depend(shop, "requests", "2.30.0")
    vulnerabilities_match()
    document = json.loads((FEED / "PYSEC-2023-74.json").read_text())
    advisories_import(
        documents=[{**document, "modified": "2025-01-01T00:00:00Z", "withdrawn": "2025-01-01"}]
    )
    vulnerabilities_match()
    assert Vulnerability.objects.get().status == "auto_closed"


@pytest.mark.parametrize(
    ("base", "reachable", "attacked", "env", "expected"),
    [
        ("medium", False, False, "prod", ("medium", [])),
        ("medium", True, False, "prod", ("high", ["reachable"])),
        ("medium", True, True, "prod", ("critical", ["reachable", "under_attack"])),
        ("critical", True, True, "production", ("critical", ["reachable", "under_attack"])),
        ("low", False, False, "staging", ("low", ["not_production"])),
        ("high", False, False, "dev", ("medium", ["not_production"])),
        ("unknown", True, False, "prod", ("unknown", ["reachable"])),
    ],
)
def test_adjusted_severity(
    base: str, reachable: bool, attacked: bool, env: str, expected: tuple[str, list[str]]
) -> None:
    assert (
        adjusted_severity(base=base, reachable=reachable, under_attack=attacked, env=env)
        == expected
    )


def test_attack_and_reachability_raise_the_stored_severity(shop: Service) -> None:
    reachability = [{"id": "GHSA-j8r2-6x86-q33q", "reached": [{"path": "a.py", "symbol": "f"}]}]
    depend(shop, "requests", "2.30.0", reachability=reachability)
    SecurityEvent.objects.create(
        trace_id="1" * 32,
        span_id="1" * 16,
        service=shop,
        env="prod",
        source="tracer",
        rule_id="crs-942-100",
        detected_at=timezone.now() - timedelta(days=2),
    )
    vulnerabilities_match()
    vulnerability = Vulnerability.objects.get()
    assert vulnerability.reachable is True
    assert (vulnerability.severity, vulnerability.severity_reasons) == (
        "critical",
        ["reachable", "under_attack"],
    )


def test_triage_writes_one_row_and_checks_the_reason(shop: Service, member_user: User) -> None:
    depend(shop, "requests", "2.30.0")
    vulnerabilities_match()
    vulnerability = Vulnerability.objects.get()
    with pytest.raises(ValidationError, match="Muting needs a reason"):
        vulnerability_status_set(vulnerability=vulnerability, status="muted", actor=member_user)
    with pytest.raises(ValidationError):
        vulnerability_status_set(vulnerability=vulnerability, status="auto_closed", actor=None)
    row = vulnerability_status_set(
        vulnerability=vulnerability, status="in_progress", comment="on it", actor=member_user
    )
    assert row is not None
    assert (row.actor_name, row.from_value, row.to_value, row.message) == (
        "mel",
        "open",
        "in_progress",
        "on it",
    )
    assert (
        vulnerability_status_set(vulnerability=vulnerability, status="in_progress", actor=None)
        is None
    )


# --- Uploads ------------------------------------------------------------------------------

UPLOADS = {
    "requirements.txt": (
        b"# pinned\nRequests[socks]==2.30.0 ; python_version >= '3.8' \\\n"
        b"    --hash=sha256:abc\nflask>=2\n-r other.txt\n",
        "requirements",
        {("Requests", "2.30.0")},
    ),
    "poetry.lock": (
        b'[[package]]\nname = "requests"\nversion = "2.30.0"\n\n'
        b'[[package]]\nname = "idna"\nversion = "3.4"\n',
        "poetry_lock",
        {("requests", "2.30.0"), ("idna", "3.4")},
    ),
    "uv.lock": (
        b'version = 1\n[[package]]\nname = "app"\nsource = { virtual = "." }\n\n'
        b'[[package]]\nname = "requests"\nversion = "2.30.0"\n',
        "uv_lock",
        {("requests", "2.30.0")},
    ),
    "package-lock.json": (
        json.dumps(
            {
                "lockfileVersion": 3,
                "packages": {
                    "": {"name": "front", "version": "1.0.0"},
                    "node_modules/lodash": {"version": "4.17.20"},
                    "node_modules/a/node_modules/@scope/b": {"version": "1.0.0"},
                },
            }
        ).encode(),
        "package_lock",
        {("lodash", "4.17.20"), ("@scope/b", "1.0.0")},
    ),
    "bom.json": (
        json.dumps(
            {
                "bomFormat": "CycloneDX",
                "specVersion": "1.5",
                "components": [
                    {"name": "requests", "version": "2.30.0", "purl": "pkg:pypi/requests@2.30.0"},
                    {
                        "name": "lodash",
                        "version": "4.17.20",
                        "purl": "pkg:npm/lodash@4.17.20",
                        "components": [{"name": "x", "version": "1", "purl": "pkg:maven/x/x@1"}],
                    },
                ],
            }
        ).encode(),
        "cyclonedx",
        {("requests", "2.30.0"), ("lodash", "4.17.20")},
    ),
}


@pytest.mark.parametrize("filename", list(UPLOADS))
def test_upload_each_format(
    filename: str, make_api_key: Callable[..., str], django_capture_on_commit_callbacks: Any
) -> None:
    load_feed()
    content, file_format, expected = UPLOADS[filename]
    client = Client(HTTP_AUTHORIZATION=f"Bearer {make_api_key('write')}")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(
            "/api/v1/dependency-uploads",
            {"service": "batch", "env": "prod", "file": SimpleUploadedFile(filename, content)},
        )
    assert response.status_code == 201, response.content
    assert response.json()["format"] == file_format
    service = Service.objects.get(name="batch", env="prod")
    assert set(service.dependencies.values_list("name", "version")) == expected
    assert len(callbacks) == 1  # matching enqueued once the upload commits
    vulnerabilities_match(service_ids=[service.pk])
    assert Vulnerability.objects.filter(service=service).exists()


@pytest.mark.parametrize(
    ("filename", "content", "message"),
    [
        ("requirements.txt", b"requests==2.30.0\nnot a requirement!!\n", "line 2"),
        ("poetry.lock", b"[[package]\nname=", "not valid TOML"),
        ("package-lock.json", b"{", "not valid JSON"),
        ("package-lock.json", b"{}", "not a package-lock.json"),
        ("bom.json", b'{"bomFormat": "SPDX"}', "not a CycloneDX"),
        ("bom.json", b'{"bomFormat": "CycloneDX", "components": {}}', "components"),
        ("requirements.txt", b"\xff\xfe\x00", "not UTF-8"),
    ],
)
def test_malformed_upload_is_a_400_naming_the_problem(
    filename: str, content: bytes, message: str, make_api_key: Callable[..., str]
) -> None:
    client = Client(HTTP_AUTHORIZATION=f"Bearer {make_api_key('write')}")
    response = client.post(
        "/api/v1/dependency-uploads",
        {"service": "batch", "file": SimpleUploadedFile(filename, content)},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert message in error["message"]
    assert not Service.objects.filter(name="batch").exists()


def test_upload_needs_the_write_scope_and_a_known_format(make_api_key: Callable[..., str]) -> None:
    upload = {"service": "s", "file": SimpleUploadedFile("requirements.txt", b"a==1\n")}
    reader = Client(HTTP_AUTHORIZATION=f"Bearer {make_api_key('read')}")
    assert reader.post("/api/v1/dependency-uploads", upload).status_code == 403
    writer = Client(HTTP_AUTHORIZATION=f"Bearer {make_api_key('write')}")
    response = writer.post(
        "/api/v1/dependency-uploads", {"service": "s", "file": SimpleUploadedFile("x.bin", b"x")}
    )
    assert response.status_code == 400
    assert "format" in response.json()["error"]["message"]


# --- API ----------------------------------------------------------------------------------


def test_api_lists_filters_and_triages(
    shop: Service,
    make_api_key: Callable[..., str],
    client_for: Callable[[User], Client],
    viewer_user: User,
    member_user: User,
) -> None:
    depend(shop, "requests", "2.30.0")
    vulnerabilities_match()
    pk = Vulnerability.objects.get().pk
    reader = Client(HTTP_AUTHORIZATION=f"Bearer {make_api_key('read')}")
    body = reader.get("/api/v1/vulnerabilities?severity=medium,high&service=shop").json()
    assert body["count"] == 1
    row = body["results"][0]
    assert row["advisory"]["id"] == "PYSEC-2023-74"
    assert row["fixed_versions"] == ["2.31.0"]
    # A javascript: reference from the feed is never offered as a link.
    assert row["advisory"]["references"] == [
        "https://github.com/psf/requests/security/advisories/GHSA-j8r2-6x86-q33q"
    ]
    assert reader.get("/api/v1/vulnerabilities?severity=low").json()["count"] == 0
    bad = reader.get("/api/v1/vulnerabilities?status=bogus")
    assert bad.status_code == 400
    assert "status" in bad.json()["error"]["message"]
    assert reader.get("/api/v1/vulnerabilities?sort=nope").status_code == 400
    assert reader.get("/api/v1/vulnerabilities/999999999999999999999").status_code == 404
    assert (
        reader.post(f"/api/v1/vulnerabilities/{pk}/status", {"status": "open"}).status_code == 403
    )

    viewer = client_for(viewer_user)
    assert viewer.get(f"/api/v1/vulnerabilities/{pk}").status_code == 200
    assert (
        viewer.post(f"/api/v1/vulnerabilities/{pk}/status", {"status": "muted"}).status_code == 403
    )
    member = client_for(member_user)
    missing = member.post(
        f"/api/v1/vulnerabilities/{pk}/status", {"status": "muted"}, content_type="application/json"
    )
    assert missing.status_code == 400
    assert "reason" in missing.json()["error"]["message"]
    done = member.post(
        f"/api/v1/vulnerabilities/{pk}/status",
        {"status": "muted", "reason": "not_exploitable", "comment": "behind a proxy"},
        content_type="application/json",
    )
    assert done.status_code == 200
    assert done.json()["activity"]["to_value"] == "muted:not_exploitable"
    detail = viewer.get(f"/api/v1/vulnerabilities/{pk}").json()
    assert [a["kind"] for a in detail["activity"]] == ["detected", "status_changed"]
    assert Client().get("/api/v1/vulnerabilities").status_code == 401


# --- Pages --------------------------------------------------------------------------------

HOSTILE = '<script>alert("x")</script>'


def test_pages_escape_hostile_names_and_permissions(
    shop: Service, client_for: Callable[[User], Client], viewer_user: User, member_user: User
) -> None:
    hostile = ServiceFactory.create(name=HOSTILE, language="python")
    depend(hostile, "requests", "2.30.0")
    depend(hostile, HOSTILE, "1.0")
    vulnerabilities_match()
    pk = Vulnerability.objects.get().pk
    viewer = client_for(viewer_user)
    for url in (
        reverse("services:vulnerabilities"),
        reverse("services:vulnerability", args=[pk]),
        reverse("services:service", args=[hostile.pk]),
        reverse("services:catalog"),
    ):
        response = viewer.get(url)
        assert response.status_code == 200, url
        assert HOSTILE.encode() not in response.content, url
        assert b"javascript:alert" not in response.content, url
    page = viewer.get(reverse("services:vulnerability", args=[pk])).content.decode()
    assert "Triage" not in page
    assert (
        viewer.post(
            reverse("services:vulnerability", args=[pk]), {"status": "remediated"}
        ).status_code
        == 403
    )
    assert Vulnerability.objects.get().status == "open"

    member = client_for(member_user)
    assert "Triage" in member.get(reverse("services:vulnerability", args=[pk])).content.decode()
    response = member.post(
        reverse("services:vulnerability", args=[pk]), {"status": "remediated", "comment": "bumped"}
    )
    assert response.status_code == 302
    assert Vulnerability.objects.get().status == "remediated"
    bad = member.post(reverse("services:vulnerability", args=[pk]), {"status": "muted"})
    assert bad.status_code == 400
    assert viewer.get(reverse("services:vulnerability", args=[pk + 1000])).status_code == 404
    assert viewer.get(reverse("services:service", args=[999999])).status_code == 404
    assert Client().get(reverse("services:vulnerabilities")).status_code == 302


def test_list_page_filters_sorts_and_serves_the_partial(
    shop: Service, client_for: Callable[[User], Client], viewer_user: User
) -> None:
    depend(shop, "requests", "2.30.0")
    depend(shop, "zope-interface-extra", "1.1")
    vulnerabilities_match()
    viewer = client_for(viewer_user)
    url = reverse("services:vulnerabilities")
    page = viewer.get(url, {"library": "zope", "sort": "-library"}).content.decode()
    assert "PYSEC-test-multi" in page
    assert "PYSEC-2023-74" not in page
    partial = viewer.get(url, {"severity": "medium"}, HTTP_HX_REQUEST="true").content.decode()
    assert partial.lstrip().startswith('<div id="vulnerability-table">')
    assert "PYSEC-2023-74" in partial
    assert "PYSEC-test-multi" not in partial
    closed = viewer.get(url, {"status": "auto_closed"}).content.decode()
    assert "No vulnerabilities found" in closed
    catalog = viewer.get(reverse("services:catalog")).content.decode()
    assert "medium 1" in catalog
    assert reverse("services:service", args=[shop.pk]) in catalog
