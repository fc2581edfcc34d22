from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.test import Client

from accounts.models import Role
from tests.factories import UserFactory


def test_schema_generates_without_warnings_and_validates(
    capsys: pytest.CaptureFixture[str],
) -> None:
    call_command("spectacular", "--fail-on-warn", "--validate", "--format", "openapi-json")
    schema = json.loads(capsys.readouterr().out)
    paths = schema["paths"]
    for path in (
        "/api/v1/traces",
        "/api/v1/security-events",
        "/api/v1/services",
        "/api/v1/api-keys",
    ):
        assert path in paths
    intake = paths["/api/v1/traces"]["post"]
    example = intake["requestBody"]["content"]["application/json"]["examples"]
    assert "appsec" in json.dumps(example)
    assert {"ApiKeyHeader", "ApiKeyBearer"} <= set(schema["components"]["securitySchemes"])


@pytest.mark.django_db
def test_docs_page_is_served_to_signed_in_users(client: Client) -> None:
    client.force_login(UserFactory.create(role=Role.VIEWER))
    page = client.get("/api/docs/")
    assert page.status_code == 200
    assert b"swagger" in page.content.lower()
