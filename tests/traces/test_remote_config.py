"""Remote configuration: the denylist served to tracers as ASM_DATA over `/v0.7/config`.

Requests start from what ddtrace 4.16 sent (rc_v07_config_request_*.json); answers are read as
libdatadog's fetcher reads them: targets as base64 TUF JSON, content checked against its sha256
and length, `{}` meaning "nothing changed".
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client

from signals.models import DenylistEntry
from tests.traces.replay import FIXTURES
from traces.remote_config import (
    BLOCKED_IPS_PATH,
    BLOCKED_USERS_PATH,
    config_request_parse,
    remote_config_answer,
)

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def captured(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return document


def initial_request() -> dict[str, Any]:
    return copy.deepcopy(captured("rc_v07_config_request_initial")["body"])


def deny(
    kind: str, value: str, *, updated_at: datetime, expires_at: datetime | None = None
) -> DenylistEntry:
    entry = DenylistEntry.objects.create(
        kind=kind, value=value, reason="test", expires_at=expires_at
    )
    # updated_at is auto_now: set the moment the version derives from explicitly.
    DenylistEntry.objects.filter(pk=entry.pk).update(updated_at=updated_at)
    entry.refresh_from_db()
    return entry


def answer(request: dict[str, Any], *, now: datetime = NOW) -> dict[str, Any]:
    return remote_config_answer(config_request=config_request_parse(request), now=now)


def targets(response: dict[str, Any]) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(base64.b64decode(response["targets"]))
    return document


def contents(response: dict[str, Any]) -> dict[str, bytes]:
    return {f["path"]: base64.b64decode(f["raw"]) for f in response["target_files"]}


def applied(request: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """The tracer's next request after applying `response`, as libdatadog builds it."""
    following = copy.deepcopy(request)
    signed = targets(response)["signed"]
    state = following["client"]["state"]
    held = {f["path"]: f for f in following["cached_target_files"]}
    for path in list(held):
        if path not in response["client_configs"]:
            del held[path]
    for path, meta in signed["targets"].items():
        held[path] = {
            "path": path,
            "length": meta["length"],
            "hashes": [{"algorithm": "sha256", "hash": meta["hashes"]["sha256"]}],
        }
    following["cached_target_files"] = list(held.values())
    state["targets_version"] = signed["version"]
    state["config_states"] = [
        {
            "id": path.split("/")[3],
            "version": signed["targets"][path]["custom"]["v"],
            "product": path.split("/")[2],
            "apply_state": 2,
            "apply_error": "",
        }
        for path in response["client_configs"]
    ]
    return following


def millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def test_nothing_to_serve_is_an_empty_answer() -> None:
    assert answer(initial_request()) == {}


def test_a_client_that_does_not_want_asm_data_gets_nothing() -> None:
    deny("ip", "198.51.100.66", updated_at=NOW)
    request = initial_request()
    request["client"]["products"] = ["APM_TRACING", "ASM_FEATURES"]
    assert answer(request) == {}


def test_blocked_ips_and_users_are_served_as_asm_data() -> None:
    earlier = NOW - timedelta(hours=2)
    deny("ip", "198.51.100.66", updated_at=earlier)
    deny("ip", "203.0.113.0/24", updated_at=earlier, expires_at=NOW + timedelta(days=1))
    deny("user", "mallory", updated_at=NOW - timedelta(minutes=5))

    response = answer(initial_request())

    assert response["roots"] == []
    assert sorted(response["client_configs"]) == [BLOCKED_IPS_PATH, BLOCKED_USERS_PATH]
    document = targets(response)
    assert document["signatures"] == []
    signed = document["signed"]
    # The shape ddtrace applied in the capture (rc_v07_config_response_block_ip_served.json).
    served = json.loads(
        base64.b64decode(captured("rc_v07_config_response_block_ip_served")["response"]["targets"])
    )
    assert set(signed) == set(served["signed"])
    assert signed["_type"] == "targets"
    assert signed["spec_version"] == "1.0.0"
    assert isinstance(signed["custom"]["opaque_backend_state"], str)

    files = contents(response)
    assert set(files) == set(signed["targets"]) == set(response["client_configs"])
    for path, raw in files.items():
        meta = signed["targets"][path]
        assert meta["hashes"] == {"sha256": hashlib.sha256(raw).hexdigest()}
        assert meta["length"] == len(raw)

    assert json.loads(files[BLOCKED_IPS_PATH]) == {
        "rules_data": [
            {
                "id": "blocked_ips",
                "type": "ip_with_expiration",
                "data": [
                    {"value": "198.51.100.66", "expiration": 0},
                    {
                        "value": "203.0.113.0/24",
                        "expiration": int((NOW + timedelta(days=1)).timestamp()),
                    },
                ],
            }
        ]
    }
    assert json.loads(files[BLOCKED_USERS_PATH]) == {
        "rules_data": [
            {
                "id": "blocked_users",
                "type": "data_with_expiration",
                "data": [{"value": "mallory", "expiration": 0}],
            }
        ]
    }
    # Each file's version is the moment its list last changed; the targets version the latest.
    assert signed["targets"][BLOCKED_IPS_PATH]["custom"] == {"v": millis(earlier)}
    users_version = millis(NOW - timedelta(minutes=5))
    assert signed["targets"][BLOCKED_USERS_PATH]["custom"] == {"v": users_version}
    assert signed["version"] == users_version


def test_only_kinds_with_entries_get_a_file() -> None:
    deny("user", "mallory", updated_at=NOW)
    response = answer(initial_request())
    assert response["client_configs"] == [BLOCKED_USERS_PATH]
    assert set(targets(response)["signed"]["targets"]) == {BLOCKED_USERS_PATH}


def test_expired_entries_are_not_served() -> None:
    deny("ip", "198.51.100.66", updated_at=NOW - timedelta(days=2), expires_at=NOW)
    deny("ip", "198.51.100.67", updated_at=NOW - timedelta(days=2))
    deny("user", "mallory", updated_at=NOW - timedelta(days=2), expires_at=NOW - timedelta(days=1))

    response = answer(initial_request())

    assert response["client_configs"] == [BLOCKED_IPS_PATH]
    data = json.loads(contents(response)[BLOCKED_IPS_PATH])["rules_data"][0]["data"]
    assert data == [{"value": "198.51.100.67", "expiration": 0}]


def test_only_expired_entries_is_nothing_to_serve() -> None:
    deny("ip", "198.51.100.66", updated_at=NOW - timedelta(days=2), expires_at=NOW)
    assert answer(initial_request()) == {}


def test_invalid_ip_values_are_skipped_not_served() -> None:
    # The WAF would refuse the whole list over one bad value.
    deny("ip", "not-an-ip", updated_at=NOW)
    deny("ip", " 198.51.100.66 ", updated_at=NOW)
    deny("ip", "10.1.2.3/8", updated_at=NOW)
    data = json.loads(contents(answer(initial_request()))[BLOCKED_IPS_PATH])
    assert [d["value"] for d in data["rules_data"][0]["data"]] == ["10.0.0.0/8", "198.51.100.66"]


def test_equal_denylists_give_equal_answers() -> None:
    deny("ip", "198.51.100.66", updated_at=NOW - timedelta(hours=1))
    first = answer(initial_request())
    assert answer(initial_request(), now=NOW + timedelta(hours=1)) == first


def test_a_tracer_holding_the_current_files_gets_nothing_new() -> None:
    deny("ip", "198.51.100.66", updated_at=NOW - timedelta(hours=1))
    deny("user", "mallory", updated_at=NOW - timedelta(hours=1))
    request = initial_request()
    following = applied(request, answer(request))
    assert answer(following) == {}
    assert answer(following, now=NOW + timedelta(minutes=5)) == {}


def test_versions_increase_when_an_entry_is_added() -> None:
    deny("ip", "198.51.100.66", updated_at=NOW - timedelta(hours=1))
    request = initial_request()
    first = answer(request)
    following = applied(request, first)

    deny("ip", "198.51.100.67", updated_at=NOW)
    second = answer(following)

    before, after = targets(first)["signed"], targets(second)["signed"]
    assert after["version"] > before["version"]
    path_version = after["targets"][BLOCKED_IPS_PATH]["custom"]["v"]
    assert path_version > before["targets"][BLOCKED_IPS_PATH]["custom"]["v"]
    data = json.loads(contents(second)[BLOCKED_IPS_PATH])["rules_data"][0]["data"]
    assert [d["value"] for d in data] == ["198.51.100.66", "198.51.100.67"]


def test_versions_increase_when_an_entry_expires() -> None:
    deny("ip", "198.51.100.66", updated_at=NOW - timedelta(hours=1))
    deny("ip", "198.51.100.67", updated_at=NOW - timedelta(hours=1), expires_at=NOW)
    request = initial_request()
    first = answer(request, now=NOW - timedelta(minutes=1))
    following = applied(request, first)

    second = answer(following, now=NOW + timedelta(minutes=1))

    path_version = targets(second)["signed"]["targets"][BLOCKED_IPS_PATH]["custom"]["v"]
    assert path_version == millis(NOW)
    assert path_version > targets(first)["signed"]["targets"][BLOCKED_IPS_PATH]["custom"]["v"]
    data = json.loads(contents(second)[BLOCKED_IPS_PATH])["rules_data"][0]["data"]
    assert data == [{"value": "198.51.100.66", "expiration": 0}]


def test_versions_increase_when_the_newest_entry_is_deleted() -> None:
    deny("ip", "198.51.100.66", updated_at=NOW - timedelta(hours=1))
    newest = deny("ip", "198.51.100.67", updated_at=NOW)
    request = initial_request()
    first = answer(request)
    following = applied(request, first)

    newest.delete()
    second = answer(following)

    before, after = targets(first)["signed"], targets(second)["signed"]
    assert after["version"] > before["version"]
    held = before["targets"][BLOCKED_IPS_PATH]["custom"]["v"]
    assert after["targets"][BLOCKED_IPS_PATH]["custom"]["v"] > held
    assert list(contents(second)) == [BLOCKED_IPS_PATH]


def test_an_emptied_list_is_removed_from_the_tracer() -> None:
    """`{}` would leave the tracer blocking: the answer lists no file, which makes libdatadog
    drop it and ddtrace remove it from the WAF."""
    entry = deny("ip", "198.51.100.66", updated_at=NOW - timedelta(hours=1))
    deny("user", "mallory", updated_at=NOW - timedelta(hours=1))
    request = initial_request()
    first = answer(request)
    following = applied(request, first)

    entry.delete()
    second = answer(following)

    assert second["client_configs"] == [BLOCKED_USERS_PATH]
    assert second["target_files"] == []  # the users file is unchanged: not resent
    assert targets(second)["signed"]["version"] > targets(first)["signed"]["version"]

    DenylistEntry.objects.all().delete()
    third = answer(applied(following, second))
    assert third["client_configs"] == []
    assert third["target_files"] == []
    assert targets(third)["signed"]["targets"] == {}
    assert targets(third)["signed"]["version"] > targets(second)["signed"]["version"]
    # Then the tracer holds nothing, which is what it should hold.
    assert answer(applied(applied(following, second), third)) == {}


def test_cached_files_are_not_resent() -> None:
    deny("ip", "198.51.100.66", updated_at=NOW - timedelta(hours=1))
    request = initial_request()
    first = answer(request)
    following = applied(request, first)

    deny("user", "mallory", updated_at=NOW)
    second = answer(following)

    assert sorted(second["client_configs"]) == [BLOCKED_IPS_PATH, BLOCKED_USERS_PATH]
    assert list(contents(second)) == [BLOCKED_USERS_PATH]
    signed = targets(second)["signed"]
    # The file the tracer holds keeps the version it applied.
    assert (
        signed["targets"][BLOCKED_IPS_PATH] == targets(first)["signed"]["targets"][BLOCKED_IPS_PATH]
    )


def test_the_captured_tracer_state_is_brought_up_to_date() -> None:
    """ddtrace after applying the capture's fake-agent answer: it holds a blocked_ips file of
    other bytes (version 1) and an ASM_FEATURES file the console does not serve."""
    deny("ip", "198.51.100.66", updated_at=NOW)
    request = captured("rc_v07_config_request_after_apply")["body"]

    response = answer(request)

    assert response["client_configs"] == [BLOCKED_IPS_PATH]
    assert list(contents(response)) == [BLOCKED_IPS_PATH]
    signed = targets(response)["signed"]
    assert signed["targets"][BLOCKED_IPS_PATH]["custom"]["v"] > 1
    assert signed["version"] > request["client"]["state"]["targets_version"]


# --- through the agent endpoint ----------------------------------------------------------------


def post(client: Client, body: str | bytes, **extra: Any) -> Any:
    extra.setdefault("REMOTE_ADDR", "127.0.0.1")
    return client.post("/v0.7/config", body, content_type="application/json", **extra)


def test_the_endpoint_serves_the_denylist(client: Client) -> None:
    DenylistEntry.objects.create(kind="ip", value="198.51.100.66", reason="test")
    response = post(client, json.dumps(initial_request()))
    assert response.status_code == 200
    assert response.json()["client_configs"] == [BLOCKED_IPS_PATH]
    following = applied(initial_request(), response.json())
    assert post(client, json.dumps(following)).json() == {}


def test_the_endpoint_keeps_its_authorization(client: Client) -> None:
    response = post(client, json.dumps(initial_request()), REMOTE_ADDR="198.51.100.9")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


def _broken(path: list[str | int], value: Any) -> str:
    request: Any = initial_request()
    target = request
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return json.dumps(request)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "body: not valid JSON"),
        ("[]", "body: expected an object"),
        ("{}", "client: expected an object"),
        ('{"client": []}', "client: expected an object"),
        (_broken(["client", "products"], "ASM_DATA"), "client.products: expected an array"),
        (_broken(["client", "products"], ["ASM_DATA", 3]), "client.products[1]: expected a string"),
        (_broken(["client", "state"], 1), "client.state: expected an object"),
        (
            _broken(["client", "state", "targets_version"], -1),
            "client.state.targets_version: expected an integer",
        ),
        (
            _broken(["client", "state", "targets_version"], 2**64),
            "client.state.targets_version: expected an integer",
        ),
        (
            _broken(["client", "state", "config_states"], [{"id": "x", "product": "ASM_DATA"}]),
            None,
        ),
        (
            _broken(["client", "state", "config_states"], [{"id": 1, "product": "ASM_DATA"}]),
            "client.state.config_states[0].id: expected a string",
        ),
        (
            _broken(
                ["client", "state", "config_states"],
                [{"id": "x", "product": "ASM_DATA", "version": True}],
            ),
            "client.state.config_states[0].version: expected an integer",
        ),
        (_broken(["cached_target_files"], {}), "cached_target_files: expected an array"),
        (_broken(["cached_target_files"], ["x"]), "cached_target_files[0]: expected an object"),
        (
            _broken(["cached_target_files"], [{"path": BLOCKED_IPS_PATH, "hashes": "x"}]),
            "cached_target_files[0].hashes: expected an array",
        ),
        (
            _broken(["cached_target_files"], [{"path": None, "hashes": []}]),
            "cached_target_files[0].path: expected a string",
        ),
    ],
)
def test_malformed_requests_are_refused_with_a_message(
    client: Client, body: str, message: str | None
) -> None:
    DenylistEntry.objects.create(kind="ip", value="198.51.100.66", reason="test")
    response = post(client, body)
    if message is None:  # a config state without a version is version 0, as protobuf has it
        assert response.status_code == 200, response.content
        return
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert error["message"].startswith(message), error
