"""The signal rules pages: every rule with its state, switching, tuning and custom rules."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from accounts.models import Role
from signals.models import SignalRule
from signals.signal_rules import active_signal_rules
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

CUSTOM = {
    "id": "admin-probing",
    "name": "Admin route probing",
    "title": "Admin route probing on {service} from {client_ip}",
    "source": "security_event",
    "queries": {"probes": {"rule_type": ["lfi"]}},
    "group_by": ["service", "env", "client_ip"],
    "window_seconds": 600,
    "cases": [
        {
            "severity": "low",
            "when": [{"query": "probes", "aggregate": "requests", "op": ">=", "value": 5}],
        }
    ],
}


def signed_in(client: Client, role: str) -> Client:
    client.force_login(UserFactory.create(role=role))
    return client


def test_viewers_read_every_rule_and_cannot_change_one(client: Client) -> None:
    viewer = signed_in(client, Role.VIEWER)
    page = viewer.get("/signals/signal-rules/")
    assert page.status_code == 200
    body = page.content.decode()
    assert "Security scanner detected" in body
    assert "Add a custom rule" not in body
    assert viewer.get("/signals/signal-rules/security-scanner/").status_code == 200
    forbidden = viewer.post(
        "/signals/signal-rules/security-scanner/", {"action": "toggle", "enabled": "false"}
    )
    assert forbidden.status_code == 403
    assert viewer.post("/signals/signal-rules/", {"definition": "{}"}).status_code == 403
    assert viewer.get("/signals/signal-rules/no-such-rule/").status_code == 404


def test_members_switch_tune_and_reset_a_built_in_rule(client: Client) -> None:
    member = signed_in(client, Role.MEMBER)
    url = "/signals/signal-rules/security-scanner/"
    member.post(url, {"action": "toggle", "enabled": "false"})
    assert SignalRule.objects.get(rule_id="security-scanner").enabled is False
    assert "security-scanner" not in {rule.id for rule in active_signal_rules()}
    member.post(url, {"action": "toggle", "enabled": "true"})

    definition = json.loads(member.get(url).context["draft"])
    definition["window_seconds"] = 7200
    saved = member.post(url, {"action": "save", "definition": json.dumps(definition)})
    assert saved.status_code == 302
    tuned = {rule.id: rule for rule in active_signal_rules()}["security-scanner"]
    assert tuned.window_seconds == 7200

    member.post(url, {"action": "reset"})
    assert {rule.id: rule for rule in active_signal_rules()}[
        "security-scanner"
    ].window_seconds == 3600
    refused = member.post(url, {"action": "delete"})
    assert refused.status_code == 400
    assert "cannot be deleted" in refused.content.decode()


def test_members_add_edit_and_delete_a_custom_rule(client: Client) -> None:
    member = signed_in(client, Role.MEMBER)
    added = member.post("/signals/signal-rules/", {"definition": json.dumps(CUSTOM)})
    assert added.status_code == 302
    assert "admin-probing" in {rule.id for rule in active_signal_rules()}
    again = member.post("/signals/signal-rules/", {"definition": json.dumps(CUSTOM)})
    assert again.status_code == 400
    assert "exists already" in again.content.decode()

    url = "/signals/signal-rules/admin-probing/"
    changed = CUSTOM | {"window_seconds": 60}
    member.post(url, {"action": "save", "definition": json.dumps(changed)})
    assert {rule.id: rule for rule in active_signal_rules()}["admin-probing"].window_seconds == 60
    member.post(url, {"action": "delete"})
    assert not SignalRule.objects.filter(rule_id="admin-probing").exists()


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ("{not json", "definition: not valid JSON"),
        (json.dumps(CUSTOM | {"window_seconds": -5}), "window_seconds"),
        (json.dumps(CUSTOM | {"group_by": ["nothing"]}), "group_by"),
    ],
)
def test_a_bad_rule_is_a_400_that_names_the_problem(
    client: Client, definition: str, message: str
) -> None:
    member = signed_in(client, Role.MEMBER)
    response = member.post("/signals/signal-rules/", {"definition": definition})
    assert response.status_code == 400
    assert message in response.content.decode()
    # What was typed stays in the form.
    assert response.context["draft"] == definition
