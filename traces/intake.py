"""The agent protocol, served by the console itself, so that a service runs unchanged with
`DD_TRACE_AGENT_URL=http://<console>:<port>`. See PROTOCOL.md of the ddtrace captures.

Each request is authenticated, size-checked and decode-checked, stored as one IntakeBatch and
answered at once; workers do the rest. Bad input gets a 4xx naming the problem.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import zlib
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from accounts.authentication import raw_api_key
from accounts.models import APIKey, APIKeyScope
from accounts.selectors import api_key_from_raw
from accounts.services import api_key_touch
from asm_console.api import error_body
from services.telemetry import TelemetryError, telemetry_validate
from traces.decoding import PayloadError, SpanData, decode_v04, decode_v05, parse_json
from traces.dispatch import batch_dispatch
from traces.models import IntakeBatch
from traces.remote_config import (
    RemoteConfigRequestError,
    config_request_parse,
    remote_config_answer,
)

logger = logging.getLogger(__name__)

INFO = {
    "version": "7.60.0",
    "endpoints": [
        "/v0.4/traces",
        "/v0.5/traces",
        "/v0.6/stats",
        "/v0.7/config",
        "/telemetry/proxy/",
    ],
    # The console wants every trace: tracers must not drop priority-0 traces themselves.
    "client_drop_p0s": False,
    "span_meta_structs": True,
    "long_running_spans": False,
    "evp_proxy_allowed_headers": [],
    "config": {"statsd_port": 0, "receiver_port": 0},
}
INFO_BODY = json.dumps(INFO).encode()
# Tracers refetch /info when this changes (the agent sends a hash of its /info body).
AGENT_STATE = hashlib.sha256(INFO_BODY).hexdigest()
# Sampling rate 1 for every service: keep every trace.
RATES_BODY = {"rate_by_service": {"service:,env:": 1}}
# Headers kept with a batch: what processing needs to describe the service.
KEPT_HEADERS = (
    "datadog-meta-lang",
    "datadog-meta-lang-version",
    "datadog-meta-lang-interpreter",
    "datadog-meta-tracer-version",
    "x-datadog-trace-count",
    "dd-telemetry-request-type",
)


class IntakeError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> JsonResponse:
        return JsonResponse(error_body(self.code, self.message), status=self.status)


def client_address(request: HttpRequest) -> str:
    """The address the request came from, past ASM_TRUSTED_PROXY_COUNT reverse proxies."""
    remote = str(request.META.get("REMOTE_ADDR", ""))
    proxies = settings.ASM_TRUSTED_PROXY_COUNT
    if proxies:
        hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        hops = [h for h in hops if h]
        if len(hops) >= proxies:
            return hops[-proxies]
    return remote


def _authorize(request: HttpRequest) -> APIKey | None:
    """Allow trusted networks, or any network with an intake key; refuse with 403 otherwise."""
    raw = raw_api_key(request)
    if raw is not None:
        api_key = api_key_from_raw(raw)
        if api_key is None or not api_key.has_scope(APIKeyScope.INTAKE):
            raise IntakeError(403, "permission_denied", "The API key is not a valid intake key.")
        api_key_touch(api_key=api_key)
        return api_key
    try:
        address = ipaddress.ip_address(client_address(request))
    except ValueError:
        address = None
    if address is not None and getattr(address, "ipv4_mapped", None):
        address = address.ipv4_mapped  # type: ignore[union-attr]
    if address is None or not any(address in net for net in settings.ASM_AGENT_TRUSTED_NETWORKS):
        raise IntakeError(
            403,
            "permission_denied",
            "This address may not send traces without an intake API key in DD-API-KEY "
            "(see ASM_AGENT_TRUSTED_NETWORKS).",
        )
    return None


def read_body(request: HttpRequest) -> bytes:
    """The body, decompressed, refusing with 413 before reading past the limit."""
    limit = settings.ASM_INTAKE_MAX_BODY_BYTES
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise IntakeError(400, "invalid", "Content-Length is not a number.") from None
    if length > limit:
        raise IntakeError(413, "too_large", f"The body exceeds {limit} bytes.")
    body = request.read(limit + 1)
    if len(body) > limit:
        raise IntakeError(413, "too_large", f"The body exceeds {limit} bytes.")
    encoding = request.META.get("HTTP_CONTENT_ENCODING", "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise IntakeError(
            415, "unsupported_media_type", f"Unsupported Content-Encoding {encoding!r}."
        )
    # wbits 32+15 accepts both gzip and zlib headers. Decompress at most limit+1 bytes, so a
    # small body that inflates to gigabytes (a decompression bomb) costs nothing.
    decompressor = zlib.decompressobj(32 + zlib.MAX_WBITS)
    try:
        data = decompressor.decompress(body, limit + 1)
    except zlib.error:
        raise IntakeError(400, "invalid", f"The body is not valid {encoding} data.") from None
    if len(data) > limit or decompressor.unconsumed_tail:
        raise IntakeError(413, "too_large", f"The decompressed body exceeds {limit} bytes.")
    return data


def _require_content_type(request: HttpRequest, *allowed: str) -> None:
    # Requiring a non-simple type also makes browsers preflight, which the intake never
    # answers: a web page cannot post forged traces through a visitor's browser.
    content_type = request.content_type or ""
    if content_type not in allowed:
        raise IntakeError(
            415, "unsupported_media_type", f"Content-Type must be {' or '.join(allowed)}."
        )


def _headers(request: HttpRequest) -> dict[str, str]:
    return {
        name: str(request.headers[name])[:200] for name in KEPT_HEADERS if name in request.headers
    }


def store_batch(
    *,
    kind: IntakeBatch.Kind,
    body: bytes,
    request: HttpRequest,
    api_key: APIKey | None,
    span_count: int = 0,
) -> IntakeBatch:
    address = client_address(request)
    try:
        ipaddress.ip_address(address)
    except ValueError:
        address = ""
    with transaction.atomic():
        batch = IntakeBatch.objects.create(
            kind=kind,
            body=body,
            headers=_headers(request),
            remote_addr=address or None,
            api_key=api_key,
            span_count=span_count,
        )
        transaction.on_commit(lambda: batch_dispatch(batch.pk))
    return batch


AgentView = Callable[..., HttpResponse]


def agent_endpoint(*methods: str) -> Callable[[AgentView], AgentView]:
    """Mark a view as part of the agent protocol: no login, no CSRF (no cookies are used),
    the agent-state header on every answer, and IntakeError turned into its response."""

    def decorator(view: AgentView) -> AgentView:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                response = view(request, *args, **kwargs)
            except IntakeError as exc:
                response = exc.response()
            response["Datadog-Agent-State"] = AGENT_STATE
            return response

        return login_not_required(csrf_exempt(require_http_methods(list(methods))(wrapped)))

    return decorator


@agent_endpoint("GET")
def info(request: HttpRequest) -> HttpResponse:
    _authorize(request)
    return HttpResponse(INFO_BODY, content_type="application/json")


def _traces(
    request: HttpRequest, kind: IntakeBatch.Kind, decode: Callable[[bytes], list[list[SpanData]]]
) -> HttpResponse:
    api_key = _authorize(request)
    _require_content_type(request, "application/msgpack")
    body = read_body(request)
    try:
        chunks = decode(body)
    except PayloadError as exc:
        raise IntakeError(400, "invalid", str(exc)) from None
    span_count = sum(len(chunk) for chunk in chunks)
    if span_count:
        store_batch(kind=kind, body=body, request=request, api_key=api_key, span_count=span_count)
    return JsonResponse(RATES_BODY)


@agent_endpoint("PUT", "POST")
def traces_v04(request: HttpRequest) -> HttpResponse:
    return _traces(request, IntakeBatch.Kind.TRACES_V04, decode_v04)


@agent_endpoint("PUT", "POST")
def traces_v05(request: HttpRequest) -> HttpResponse:
    return _traces(request, IntakeBatch.Kind.TRACES_V05, decode_v05)


@agent_endpoint("PUT", "POST")
def stats(request: HttpRequest) -> HttpResponse:
    """Client-side stats: accepted so that tracers that compute them are not retrying, and not
    kept: the console computes what it shows from the spans."""
    _authorize(request)
    read_body(request)
    return HttpResponse("OK", content_type="text/plain")


@agent_endpoint("POST")
def telemetry(request: HttpRequest) -> HttpResponse:
    api_key = _authorize(request)
    _require_content_type(request, "application/json")
    body = read_body(request)
    try:
        telemetry_validate(parse_json(body))
    except (PayloadError, TelemetryError) as exc:
        raise IntakeError(400, "invalid", str(exc)) from None
    store_batch(kind=IntakeBatch.Kind.TELEMETRY, body=body, request=request, api_key=api_key)
    return HttpResponse(status=202)


@agent_endpoint("POST")
def remote_config(request: HttpRequest) -> HttpResponse:
    """Remote configuration: the denylist as ASM_DATA (traces/remote_config.py), or `{}`,
    which tracers read as "nothing changed" and keep polling."""
    _authorize(request)
    body = read_body(request)
    try:
        config_request = config_request_parse(parse_json(body))
    except (PayloadError, RemoteConfigRequestError) as exc:
        raise IntakeError(400, "invalid", str(exc)) from None
    return JsonResponse(remote_config_answer(config_request=config_request, now=timezone.now()))
