from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.models import Service, ServiceDependency, ServiceEndpoint
from services.telemetry import TelemetryError, telemetry_process, telemetry_validate
from tests.factories import ServiceFactory

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ddtrace"

APP_STARTED = "telemetry_01_app_started.json"
BATCH_SCA = "telemetry_02_batch_deps_sca_integrations_config_endpoints_heartbeat.json"
BATCH_NO_SCA = "telemetry_02b_batch_deps_without_sca.json"
METRICS = "telemetry_03_batch_generate_metrics_sketches.json"
HEARTBEAT = "telemetry_04_app_heartbeat.json"
CLOSING = "telemetry_05_app_closing.json"
# The order the tracer sent them in (scenario rc_on_tel_on_sca).
SCA_RUN = [APP_STARTED, BATCH_SCA, METRICS, HEARTBEAT, CLOSING]

T0 = datetime(2026, 11, 28, 18, 26, 59, tzinfo=UTC)

# What ddtrace 4.16.0 reported loading for the Flask app with requests pinned to 2.31.0.
SCA_DEPENDENCIES = {
    "blinker": "1.9.0",
    "bytecode": "0.19.1",
    "certifi": "2026.10.19.post1",
    "charset-normalizer": "3.5.3",
    "click": "8.5.1",
    "envier": "0.6.1",
    "flask": "3.1.3",
    "idna": "3.20",
    "itsdangerous": "2.2.0",
    "jinja2": "3.1.6",
    "markupsafe": "3.0.4",
    "requests": "2.31.0",
    "setuptools": "65.5.0",
    "urllib3": "2.8.0",
    "werkzeug": "3.1.9",
    "wrapt": "2.5.2",
}


def capture(name: str) -> dict[str, Any]:
    """The decoded request body of a captured telemetry POST."""
    body: dict[str, Any] = json.loads((FIXTURES / name).read_text())["body"]
    return body


def envelope(*messages: dict[str, Any], **application: Any) -> dict[str, Any]:
    """A minimal telemetry body: one message, or a batch of several."""
    body = copy.deepcopy(capture(HEARTBEAT))
    body["application"].update(application)
    if len(messages) == 1:
        body.update(messages[0])
    elif messages:
        body.update(request_type="message-batch", payload=list(messages))
    return body


def dependencies_loaded(*dependencies: object) -> dict[str, Any]:
    return {
        "request_type": "app-dependencies-loaded",
        "payload": {"dependencies": list(dependencies)},
    }


def stored_dependencies(service: Service) -> dict[str, tuple[str, list[dict[str, Any]]]]:
    return {d.name: (d.version, d.reachability) for d in service.dependencies.all()}


def snapshot() -> tuple[list[Any], ...]:
    return (
        list(Service.objects.values().order_by("pk")),
        list(ServiceDependency.objects.values().order_by("pk")),
        list(ServiceEndpoint.objects.values().order_by("pk")),
    )


@pytest.mark.parametrize("name", [*SCA_RUN, BATCH_NO_SCA])
def test_every_capture_is_a_valid_envelope(name: str) -> None:
    telemetry_validate(capture(name))


@pytest.mark.django_db
def test_app_started_creates_the_service_with_runtime_host_and_products() -> None:
    service = telemetry_process(payload=capture(APP_STARTED), received_at=T0)

    stored = Service.objects.get()
    assert stored.pk == service.pk
    assert (stored.name, stored.env, stored.version) == ("web-store", "prod", "1.4.2")
    assert (stored.language, stored.tracer_version) == ("python", "4.16.0")
    assert stored.runtime == {
        "language_name": "python",
        "language_version": "3.11.7",
        "runtime_name": "CPython",
        "runtime_version": "3.11.7",
    }
    assert stored.host["hostname"] == "vm"
    assert stored.host["architecture"] == "x86_64"
    assert stored.host["kernel_release"] == "6.18.44-fc-v657"
    assert set(stored.products) == {
        "appsec",
        "sca",
        "tracer",
        "remote_configuration",
        "apm_tracing_rc",
        "code_origin_for_spans",
        "openfeature",
        "symbol_database",
    }
    assert stored.products["appsec"] == {"enabled": True, "version": "4.16.0", "error": None}
    assert stored.products["sca"]["enabled"] is True
    assert stored.asm_enabled is True
    assert stored.app_started_at == T0
    assert stored.last_seen == T0
    # app-started carried an empty dependency list: the deps come in the first heartbeat batch.
    assert not ServiceDependency.objects.exists()


@pytest.mark.django_db
def test_batch_stores_the_sixteen_dependencies_with_sca_reachability() -> None:
    service = telemetry_process(payload=capture(BATCH_SCA), received_at=T0)

    dependencies = stored_dependencies(service)
    assert {name: version for name, (version, _) in dependencies.items()} == SCA_DEPENDENCIES
    assert dependencies["requests"][1] == [
        {
            "id": "GHSA-652x-xj99-gmcc",
            "reached": [{"path": "app.py", "symbol": "checkout", "line": 55}],
        }
    ]
    assert all(reach == [] for name, (_, reach) in dependencies.items() if name != "requests")
    assert set(service.dependencies.values_list("last_seen", flat=True)) == {T0}


@pytest.mark.django_db
def test_batch_stores_the_route_inventory() -> None:
    service = telemetry_process(payload=capture(BATCH_SCA), received_at=T0)

    assert service.endpoints.count() == 49
    checkout = service.endpoints.get(method="GET", path="/checkout")
    assert checkout.operation_name == "flask.request"
    assert checkout.resource_name == "GET /checkout"
    assert checkout.last_seen == T0
    assert service.endpoints.get(method="POST", path="/login").resource_name == "POST /login"
    assert service.endpoints.filter(path="/static/<path:filename>").count() == 3
    # Flask registers no GET for POST-only routes, and the tracer reports exactly that.
    assert not service.endpoints.filter(method="GET", path="/login").exists()


@pytest.mark.django_db
def test_batch_without_sca_stores_dependencies_with_empty_reachability() -> None:
    service = telemetry_process(payload=capture(BATCH_NO_SCA), received_at=T0)

    dependencies = stored_dependencies(service)
    assert len(dependencies) == 16
    assert dependencies["requests"] == ("2.34.2", [])
    assert all(reach == [] for _, reach in dependencies.values())
    assert service.endpoints.count() == 31


@pytest.mark.django_db
def test_processing_the_whole_run_twice_leaves_the_same_rows() -> None:
    for offset, name in enumerate(SCA_RUN):
        telemetry_process(payload=capture(name), received_at=T0 + timedelta(seconds=offset))
    first = snapshot()
    assert (len(first[0]), len(first[1]), len(first[2])) == (1, 16, 49)

    for offset, name in enumerate(SCA_RUN):
        telemetry_process(payload=capture(name), received_at=T0 + timedelta(seconds=offset))

    assert snapshot() == first


@pytest.mark.django_db
def test_heartbeats_metrics_and_closing_only_move_last_seen() -> None:
    telemetry_process(payload=capture(APP_STARTED), received_at=T0)
    telemetry_process(payload=capture(BATCH_SCA), received_at=T0 + timedelta(seconds=5))
    before = Service.objects.get()

    later = T0 + timedelta(minutes=1)
    for name in (METRICS, HEARTBEAT, CLOSING):
        telemetry_process(payload=capture(name), received_at=later)

    after = Service.objects.get()
    assert after.last_seen == later
    assert after.products == before.products
    assert after.app_started_at == T0
    assert ServiceDependency.objects.count() == 16
    assert ServiceEndpoint.objects.count() == 49
    # The dependencies and routes were last reported by the batch, not by the heartbeats.
    assert set(ServiceDependency.objects.values_list("last_seen", flat=True)) == {
        T0 + timedelta(seconds=5)
    }


@pytest.mark.django_db
def test_an_older_body_processed_late_does_not_overwrite_newer_data() -> None:
    newer = envelope(
        dependencies_loaded({"name": "requests", "version": "2.31.0", "metadata": []}),
        service_version="1.5.0",
    )
    telemetry_process(payload=newer, received_at=T0 + timedelta(hours=1))

    # A retried batch from before the upgrade, processed after the newer one.
    telemetry_process(payload=capture(BATCH_SCA), received_at=T0)

    service = Service.objects.get()
    assert service.version == "1.5.0"
    assert service.last_seen == T0 + timedelta(hours=1)
    requests = service.dependencies.get(name="requests", version="2.31.0")
    assert requests.reachability == []
    assert requests.last_seen == T0 + timedelta(hours=1)
    # What only the older body knew is still stored.
    assert service.dependencies.count() == 16
    assert service.endpoints.count() == 49


@pytest.mark.django_db
def test_app_started_with_appsec_off_leaves_asm_enabled_alone() -> None:
    ServiceFactory.create(name="web-store", env="prod", asm_enabled=True, last_seen=None)
    body = copy.deepcopy(capture(APP_STARTED))
    body["payload"]["products"]["appsec"]["enabled"] = False

    service = telemetry_process(payload=body, received_at=T0)

    assert service.asm_enabled is True
    assert service.products["appsec"]["enabled"] is False
    assert Service.objects.count() == 1


@pytest.mark.django_db
def test_telemetry_without_appsec_product_does_not_enable_asm() -> None:
    body = copy.deepcopy(capture(APP_STARTED))
    del body["payload"]["products"]["appsec"]

    service = telemetry_process(payload=body, received_at=T0)

    assert service.asm_enabled is False


@pytest.mark.django_db
def test_same_service_in_another_env_is_another_service() -> None:
    telemetry_process(payload=capture(HEARTBEAT), received_at=T0)
    telemetry_process(payload=envelope(env="staging"), received_at=T0)
    telemetry_process(payload=envelope(env=None), received_at=T0)

    assert sorted(Service.objects.values_list("name", "env")) == [
        ("web-store", ""),
        ("web-store", "prod"),
        ("web-store", "staging"),
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("metadata", "reachability"),
    [
        (None, []),
        ([], []),
        ("not a list", []),
        ([{"type": "reachability", "value": "{not json"}], []),
        ([{"type": "reachability", "value": "[1, 2]"}], []),
        ([{"type": "reachability", "value": {"id": "GHSA-x"}}], []),
        ([{"type": "reachability", "value": '{"reached": []}'}], []),
        ([{"type": "reachability", "value": "[" * 5000 + "]" * 5000}], []),
        ([{"type": "reachability", "value": '{"id": "' + "x" * 20_000 + '"}'}], []),
        ([{"type": "other", "value": '{"id": "GHSA-x"}'}, "junk", None], []),
        (
            [
                {"type": "reachability", "value": "{broken"},
                {
                    "type": "reachability",
                    "value": json.dumps(
                        {
                            "id": "GHSA-aaaa-bbbb-cccc",
                            "reached": [
                                {"path": "a.py", "symbol": "f", "line": 3, "extra": {"x": 1}},
                                {"path": "b\x00.py", "symbol": 7, "line": "nine"},
                                "junk",
                            ],
                            "unused": [1, 2, 3],
                        }
                    ),
                },
            ],
            [
                {
                    "id": "GHSA-aaaa-bbbb-cccc",
                    "reached": [
                        {"path": "a.py", "symbol": "f", "line": 3},
                        {"path": "b.py", "symbol": "", "line": None},
                    ],
                }
            ],
        ),
    ],
)
def test_malformed_reachability_is_skipped_without_failing(
    metadata: object, reachability: list[dict[str, Any]]
) -> None:
    body = envelope(dependencies_loaded({"name": "lib", "version": "1.0", "metadata": metadata}))

    service = telemetry_process(payload=body, received_at=T0)

    assert stored_dependencies(service) == {"lib": ("1.0", reachability)}


@pytest.mark.django_db
def test_hostile_values_are_cut_to_the_field_lengths_and_cleaned() -> None:
    body = envelope(
        dependencies_loaded(
            {"name": "a" * 1000, "version": "1" * 1000},
            {"name": "nul\x00lib", "version": "1.0\ud800"},
            {"name": "", "version": "1.0"},
            {"name": 42, "version": "1.0"},
            {"name": "dup", "version": "1.0"},
            {"name": "dup", "version": "1.0"},
            "junk",
        ),
        {
            "request_type": "app-endpoints",
            "payload": {
                "endpoints": [
                    {"method": "GET" * 10, "path": "/" + "p" * 1000, "resource_name": "r" * 999},
                    {"method": "GET", "path": None},
                    {"method": "GET", "path": "/dup", "operation_name": "first"},
                    {"method": "GET", "path": "/dup", "operation_name": "second"},
                ]
            },
        },
        service_name="s" * 500,
        env="e" * 500,
        service_version="v" * 500,
        language_name=["python"],
        tracer_version="\x00" * 10,
    )

    service = telemetry_process(payload=body, received_at=T0)

    assert (len(service.name), len(service.env), len(service.version)) == (200, 100, 100)
    assert (service.language, service.tracer_version) == ("", "")
    assert "language_name" not in service.runtime
    assert sorted(service.dependencies.values_list("name", "version")) == [
        ("a" * 200, "1" * 100),
        ("dup", "1.0"),
        ("nullib", "1.0?"),
    ]
    long_route = service.endpoints.get(method="GETGETGETGETGETG")
    assert len(long_route.path) == 500
    assert len(long_route.resource_name) == 500
    assert service.endpoints.get(path="/dup").operation_name == "second"
    assert service.endpoints.count() == 2


@pytest.mark.django_db
def test_app_started_dependencies_are_stored_too() -> None:
    body = copy.deepcopy(capture(APP_STARTED))
    body["payload"]["dependencies"] = [{"name": "flask", "version": "3.1.3", "metadata": None}]

    service = telemetry_process(payload=body, received_at=T0)

    assert stored_dependencies(service) == {"flask": ("3.1.3", [])}


@pytest.mark.django_db
def test_unknown_request_types_count_as_a_sign_of_life() -> None:
    body = envelope({"request_type": "app-extended-heartbeat", "payload": {"anything": [1]}})

    service = telemetry_process(payload=body, received_at=T0)

    assert service.last_seen == T0
    assert not service.dependencies.exists()


_DELETE = object()


def _with(path: str, value: object) -> dict[str, Any]:
    """The SCA batch with one value replaced, `path` in the error messages' notation."""
    body = copy.deepcopy(capture(BATCH_SCA))
    target: Any = body
    keys: list[Any] = []
    for part in path.replace("[", ".").replace("]", "").split("."):
        keys.append(int(part) if part.isdigit() else part)
    for key in keys[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "body: expected a JSON object"),
        ("app-started", "body: expected a JSON object"),
        (_with("request_type", _DELETE), "request_type: expected a non-empty string"),
        (_with("request_type", ""), "request_type: expected a non-empty string"),
        (_with("application", _DELETE), "application: expected an object"),
        (_with("application", "web-store"), "application: expected an object"),
        (_with("application.service_name", _DELETE), "application.service_name: expected a"),
        (_with("application.service_name", "  "), "application.service_name: expected a"),
        (_with("application.service_name", 7), "application.service_name: expected a"),
        (_with("application.service_name", "\x00"), "application.service_name: expected a"),
        (_with("application.env", 3), "application.env: expected a string"),
        (_with("host", ["vm"]), "host: expected an object"),
        (_with("payload", {"dependencies": []}), "payload: expected a list of messages"),
        (_with("payload[2]", "junk"), r"payload\[2\]: expected an object"),
        (_with("payload[1].request_type", None), r"payload\[1\]\.request_type: expected"),
        (_with("payload[0].payload", None), r"payload\[0\]\.payload: expected an object"),
        (
            _with("payload[0].payload.dependencies", {"flask": "3.1.3"}),
            r"payload\[0\]\.payload\.dependencies: expected a list",
        ),
        (
            _with("payload[3].payload.endpoints", None),
            r"payload\[3\]\.payload\.endpoints: expected a list",
        ),
        (
            _with(
                "payload[4]",
                {
                    "request_type": "message-batch",
                    "payload": [{"request_type": "message-batch", "payload": []}],
                },
            ),
            r"payload\[4\]\.payload\[0\]\.payload: message batches nested too deeply",
        ),
    ],
)
def test_validation_names_the_field(body: object, message: str) -> None:
    with pytest.raises(TelemetryError, match=f"^{message}"):
        telemetry_validate(body)


@pytest.mark.parametrize(
    ("products", "dependencies", "message"),
    [
        (["appsec"], [], "payload.products: expected an object"),
        ({}, {"flask": "3.1.3"}, "payload.dependencies: expected a list"),
    ],
)
def test_validation_checks_app_started_payload(
    products: object, dependencies: object, message: str
) -> None:
    body = copy.deepcopy(capture(APP_STARTED))
    body["payload"].update(products=products, dependencies=dependencies)

    with pytest.raises(TelemetryError, match=f"^{message}"):
        telemetry_validate(body)


def test_validation_accepts_heartbeats_without_payload_and_null_env() -> None:
    # The captured heartbeat has no `payload` key at all; other tracers send an empty env.
    telemetry_validate(envelope(env=None))
    telemetry_validate(envelope(env=""))
    telemetry_validate(envelope({"request_type": "app-closing", "payload": "ignored"}))


@pytest.mark.django_db
def test_processing_an_invalid_body_raises_and_stores_nothing() -> None:
    with pytest.raises(TelemetryError, match=r"application\.service_name"):
        telemetry_process(payload=_with("application.service_name", ""), received_at=T0)

    assert not Service.objects.exists()
