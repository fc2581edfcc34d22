"""What a span says about attacks and users: the tracer's WAF triggers and SDK user events."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from traces.client_ip import ClientIP, resolve_client_ip
from traces.decoding import SpanData

# Cut attacker-controlled strings to the sizes they are stored at.
_LIMITS = {"rule_id": 100, "rule_name": 300, "type": 64, "category": 64, "module": 64}


@dataclass(slots=True)
class RequestContext:
    """The HTTP request a service-entry span describes."""

    method: str
    route: str
    url: str
    user_agent: str
    status_code: int | None
    user: str
    blocked: bool
    client_ip: ClientIP


@dataclass(slots=True)
class TriggerData:
    rule_id: str
    rule_name: str
    rule_type: str
    rule_category: str
    rule_module: str
    rule_tags: dict[str, str]
    on_match: list[str]
    rule_matches: list[dict[str, Any]]
    security_response_id: str
    stack_trace: dict[str, Any] | None


@dataclass(slots=True)
class UserEventData:
    kind: str
    name: str
    user_id: str
    user_login: str
    user_exists: bool | None
    metadata: dict[str, str] = field(default_factory=dict)


def request_context(span: SpanData, *, trusted_ip_header: str | None) -> RequestContext:
    meta = span.meta
    status = meta.get("http.status_code", "")
    return RequestContext(
        method=meta.get("http.method", "")[:16],
        route=(meta.get("http.route") or meta.get("http.endpoint") or "")[:500],
        url=meta.get("http.url", ""),
        user_agent=meta.get("http.useragent", ""),
        status_code=int(status) if status.isdigit() and int(status) < 1000 else None,
        user=meta.get("usr.id", "")[:200],
        blocked=meta.get("appsec.blocked") == "true",
        client_ip=resolve_client_ip(meta, trusted_header=trusted_ip_header),
    )


def _appsec_document(span: SpanData) -> Mapping[str, Any] | None:
    document = span.meta_struct.get("appsec")
    if document is None and "_dd.appsec.json" in span.meta:
        # Older tracers and other languages: the same document as a JSON string.
        try:
            document = json.loads(span.meta["_dd.appsec.json"])
        except ValueError:
            return None
    return document if isinstance(document, Mapping) else None


def _stacks(span: SpanData) -> dict[str, dict[str, Any]]:
    stack_doc = span.meta_struct.get("_dd.stack")
    exploits = stack_doc.get("exploit") if isinstance(stack_doc, Mapping) else None
    if not isinstance(exploits, list):
        return {}
    return {
        str(stack["id"]): stack
        for stack in exploits
        if isinstance(stack, dict) and isinstance(stack.get("id"), str)
    }


def _text(value: Any, limit: int | None = None) -> str:
    text = value if isinstance(value, str) else ""
    return text[:limit] if limit else text


def triggers(span: SpanData) -> Iterator[TriggerData]:
    """The rules that matched on this span, from `meta_struct["appsec"]` or `_dd.appsec.json`.

    A trigger without a rule id is malformed and skipped: one bad entry must not lose the
    others, nor the batch.
    """
    document = _appsec_document(span)
    if document is None or not isinstance(document.get("triggers"), list):
        return
    stacks = _stacks(span)
    for trigger in document["triggers"]:
        if not isinstance(trigger, Mapping) or not isinstance(trigger.get("rule"), Mapping):
            continue
        rule = trigger["rule"]
        rule_id = _text(rule.get("id"), _LIMITS["rule_id"])
        if not rule_id:
            continue
        raw_tags = rule.get("tags")
        tags = (
            {str(k): str(v) for k, v in raw_tags.items() if isinstance(v, (str, int, float))}
            if isinstance(raw_tags, Mapping)
            else {}
        )
        matches = trigger.get("rule_matches")
        on_match = rule.get("on_match")
        yield TriggerData(
            rule_id=rule_id,
            rule_name=_text(rule.get("name"), _LIMITS["rule_name"]),
            rule_type=tags.get("type", "")[: _LIMITS["type"]],
            rule_category=tags.get("category", "")[: _LIMITS["category"]],
            rule_module=tags.get("module", "")[: _LIMITS["module"]],
            rule_tags=tags,
            on_match=[item for item in on_match if isinstance(item, str)]
            if isinstance(on_match, list)
            else [],
            rule_matches=[match for match in matches if isinstance(match, dict)]
            if isinstance(matches, list)
            else [],
            security_response_id=_text(trigger.get("security_response_id"), 64),
            stack_trace=stacks.get(_text(trigger.get("stack_id"))),
        )


_USER_EVENT_KINDS = {
    "users.login.success": "login_success",
    "users.login.failure": "login_failure",
    "users.signup": "signup",
}
_USER_FIELDS = {"track", "usr.id", "usr.login", "usr.exists", "login", "sdk"}


def user_events(span: SpanData) -> Iterator[UserEventData]:
    """Logins, signups and custom events: `appsec.events.<name>.track = "true"`."""
    meta = span.meta
    for key, value in meta.items():
        if not (key.startswith("appsec.events.") and key.endswith(".track")) or value != "true":
            continue
        name = key[len("appsec.events.") : -len(".track")]
        if not name:
            continue
        prefix = f"appsec.events.{name}."
        kind = _USER_EVENT_KINDS.get(name, "custom")
        exists = meta.get(f"{prefix}usr.exists")
        yield UserEventData(
            kind=kind,
            name=name[:200],
            user_id=(
                meta.get(f"{prefix}usr.id")
                or (meta.get("usr.id", "") if kind == "login_success" else "")
            )[:200],
            user_login=(meta.get(f"{prefix}usr.login") or meta.get(f"{prefix}login") or "")[:200],
            user_exists={"true": True, "false": False}.get(exists or ""),
            metadata={
                k[len(prefix) :]: v
                for k, v in meta.items()
                if k.startswith(prefix) and k[len(prefix) :] not in _USER_FIELDS
            },
        )
