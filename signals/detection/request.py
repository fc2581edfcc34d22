"""The HTTP request a detection rule looks at, as the addresses of Datadog's rule format.

Every value here is attacker-controlled and parsed leniently: a malformed body or query is
scanned as text rather than refused, and sizes are capped so that no request costs more than
a bounded amount of work.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message
from typing import Any
from urllib.parse import parse_qs, urlsplit

MAX_BODY = 64 * 1024
MAX_PARAMS = 256

# Span tags a JSON client may use to send what tracers do not: the raw body, path parameters.
BODY_TAG = "http.request.body"
PATH_PARAM_PREFIX = "http.request.path_params."
HEADER_PREFIX = "http.request.headers."


@dataclass(slots=True)
class HttpRequest:
    method: str = ""
    # The raw request-target: path and query, percent-encoding kept.
    uri: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: str | None = None
    path_params: dict[str, str] = field(default_factory=dict)
    client_ip: str | None = None
    user_id: str = ""


def _query(query: str) -> dict[str, list[str]]:
    if not query:
        return {}
    parsed = parse_qs(query, keep_blank_values=True, max_num_fields=MAX_PARAMS * 4)
    # Parameter names are scanned too (as keys); a name without "=" still counts as a key.
    return dict(list(parsed.items())[:MAX_PARAMS])


def _safe_query(query: str) -> dict[str, list[str]] | str:
    try:
        return _query(query)
    except ValueError:  # too many fields: scan the text as it is
        return query


def _cookies(header: str) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for part in header.split(";")[:MAX_PARAMS]:
        name, sep, value = part.strip().partition("=")
        if name or sep:
            cookies[name] = value
    return cookies


def _multipart(body: str, content_type: str) -> tuple[dict[str, Any], list[str]]:
    message = Message()
    message["content-type"] = content_type
    boundary = message.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        return {}, []
    fields: dict[str, Any] = {}
    filenames = []
    for part in body.split(f"--{boundary}")[1 : MAX_PARAMS + 1]:
        head, _, content = part.partition("\r\n\r\n")
        if not _:
            head, _, content = part.partition("\n\n")
        disposition = Message()
        for line in head.splitlines():
            name, colon, value = line.partition(":")
            if colon and name.strip().lower() == "content-disposition":
                disposition["content-disposition"] = value.strip()
        field_name = disposition.get_param("name", header="content-disposition")
        filename = disposition.get_param("filename", header="content-disposition")
        if isinstance(filename, str):
            filenames.append(filename)
        key = field_name if isinstance(field_name, str) else ""
        fields[key] = content.rstrip("\r\n-")
    return fields, filenames


def parse_body(body: str, content_type: str) -> tuple[Any, list[str]]:
    """The body as a structure to scan, and any upload file names."""
    body = body[:MAX_BODY]
    media_type = content_type.split(";", 1)[0].strip().lower()
    if "json" in media_type or (not media_type and body.lstrip()[:1] in ("{", "[")):
        try:
            return json.loads(body), []
        except ValueError:
            return body, []
    if media_type.startswith("multipart/"):
        fields, filenames = _multipart(body, content_type)
        return (fields or body), filenames
    if media_type in ("application/x-www-form-urlencoded", "") and "=" in body:
        # Many clients (and attack tools) post form bodies without a Content-Type; servers
        # parse them as forms all the same.
        parsed = _safe_query(body)
        return parsed if parsed else body, []
    return body, []


def addresses(request: HttpRequest) -> dict[str, Any]:
    """The request as Datadog's rule addresses."""
    path, _, query = request.uri.partition("?")
    headers = {k: v for k, v in request.headers.items() if k != "cookie"}
    result: dict[str, Any] = {
        "server.request.method": request.method,
        "server.request.uri.raw": request.uri,
        "server.request.headers.no_cookies": headers,
    }
    if query:
        result["server.request.query"] = _safe_query(query)
    if "cookie" in request.headers:
        result["server.request.cookies"] = _cookies(request.headers["cookie"])
    if request.body:
        body, filenames = parse_body(request.body, request.headers.get("content-type", ""))
        result["server.request.body"] = body
        if filenames:
            result["server.request.body.filenames"] = filenames
    if request.path_params:
        result["server.request.path_params"] = request.path_params
    if request.client_ip:
        result["http.client_ip"] = request.client_ip
    if request.user_id:
        result["usr.id"] = request.user_id
    if path and "server.request.path_params" not in result:
        # Without a route template, the path's segments stand in for its parameters.
        segments = [segment for segment in path.split("/") if segment]
        if segments:
            result["server.request.path_params"] = segments[:MAX_PARAMS]
    return result


def request_from_meta(meta: Mapping[str, str], *, client_ip: str | None) -> HttpRequest:
    """The request a service-entry span describes, from its tags."""
    url = meta.get("http.url", "")
    try:
        parts = urlsplit(url)
        uri = parts.path + (f"?{parts.query}" if parts.query else "")
    except ValueError:
        uri = url
    headers = {
        key[len(HEADER_PREFIX) :].lower(): value
        for key, value in meta.items()
        if key.startswith(HEADER_PREFIX)
    }
    if "http.useragent" in meta:
        headers.setdefault("user-agent", meta["http.useragent"])
    return HttpRequest(
        method=meta.get("http.method", ""),
        uri=uri,
        headers=headers,
        body=meta.get(BODY_TAG),
        path_params={
            key[len(PATH_PARAM_PREFIX) :]: value
            for key, value in meta.items()
            if key.startswith(PATH_PARAM_PREFIX)
        },
        client_ip=client_ip,
        user_id=meta.get("usr.id", ""),
    )
