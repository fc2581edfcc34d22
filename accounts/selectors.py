"""Read queries of accounts and API keys."""

from __future__ import annotations

import hmac

from django.db.models import F, QuerySet

from accounts.models import APIKey, AuditEvent, User
from accounts.services import API_KEY_TOKEN_PREFIX, hash_api_key


def api_key_from_raw(raw_key: str) -> APIKey | None:
    """The active key that ``raw_key`` is, or None. Constant time in the secret part."""
    if not raw_key.startswith(API_KEY_TOKEN_PREFIX) or len(raw_key) > 128:
        return None
    prefix, sep, _ = raw_key[len(API_KEY_TOKEN_PREFIX) :].partition("_")
    if not sep or not prefix:
        return None
    api_key = APIKey.objects.filter(prefix=prefix, revoked_at__isnull=True).first()
    if api_key is None or not hmac.compare_digest(api_key.key_hash, hash_api_key(raw_key)):
        return None
    return api_key


def api_key_list() -> QuerySet[APIKey]:
    return APIKey.objects.select_related("created_by", "revoked_by").order_by(
        F("revoked_at").desc(nulls_first=True), "-created_at"
    )


def user_list() -> QuerySet[User]:
    return User.objects.order_by("-is_active", "username")


def audit_event_list(*, limit: int = 50) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.all()[:limit]
