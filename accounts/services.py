"""State changes of accounts and API keys. Each writes an audit event in the same transaction."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import APIKey, APIKeyScope, AuditEvent, Role, User

API_KEY_TOKEN_PREFIX = "asm_"  # noqa: S105 (a marker, not a secret)
# A key's last-used time is written at most this often, so that a busy tracer does not
# turn every request into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_api_key(raw_key: str) -> str:
    # The key carries 256 random bits, so a fast hash is as strong as a slow one here and
    # keeps authentication off the intake's critical path.
    return hashlib.sha256(raw_key.encode()).hexdigest()


def _audit(
    *, action: AuditEvent.Action, actor: User | None, target: str, before: str = "", after: str = ""
) -> None:
    AuditEvent.objects.create(
        action=action,
        actor=actor,
        actor_name=actor.get_username() if actor else "system",
        target=target,
        before=before,
        after=after,
    )


def api_key_create(*, name: str, scopes: list[str], created_by: User | None) -> tuple[APIKey, str]:
    """Create a key and return it with its secret, which is never stored or shown again."""
    name = name.strip()
    if not name:
        raise ValidationError({"name": "Give the key a name."})
    unknown = sorted(set(scopes) - set(APIKeyScope.values))
    if unknown:
        raise ValidationError({"scopes": f"Unknown scopes: {', '.join(unknown)}."})
    if not scopes:
        raise ValidationError({"scopes": "Choose at least one scope."})
    ordered_scopes = [scope for scope in APIKeyScope.values if scope in scopes]
    for _ in range(5):
        prefix = secrets.token_hex(4)
        raw_key = f"{API_KEY_TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
        try:
            with transaction.atomic():
                api_key = APIKey.objects.create(
                    name=name,
                    prefix=prefix,
                    key_hash=hash_api_key(raw_key),
                    scopes=ordered_scopes,
                    created_by=created_by,
                )
                _audit(
                    action=AuditEvent.Action.API_KEY_CREATED,
                    actor=created_by,
                    target=str(api_key),
                    after=",".join(ordered_scopes),
                )
        except IntegrityError:
            continue  # prefix collision: draw again
        return api_key, raw_key
    raise RuntimeError("could not draw a unique API key prefix")


@transaction.atomic
def api_key_revoke(*, api_key: APIKey, actor: User | None) -> APIKey:
    updated = APIKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now(), revoked_by=actor
    )
    api_key.refresh_from_db()
    if updated:
        _audit(action=AuditEvent.Action.API_KEY_REVOKED, actor=actor, target=str(api_key))
    return api_key


def api_key_touch(*, api_key: APIKey) -> None:
    now = timezone.now()
    APIKey.objects.filter(pk=api_key.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    ).update(last_used_at=now)


def _active_admins_besides(user: User) -> int:
    return User.objects.filter(is_active=True, role=Role.ADMIN).exclude(pk=user.pk).count()


@transaction.atomic
def user_create(
    *, username: str, email: str, role: Role, password: str, actor: User | None
) -> User:
    user = User(username=username, email=email, role=role)
    user.set_password(password)
    user.full_clean()
    user.save()
    _audit(action=AuditEvent.Action.USER_CREATED, actor=actor, target=username, after=role.value)
    return user


@transaction.atomic
def user_set_role(*, user: User, role: Role, actor: User) -> User:
    user = User.objects.select_for_update().get(pk=user.pk)
    if user.role == role:
        return user
    if user.role == Role.ADMIN and _active_admins_besides(user) == 0:
        raise ValidationError("The console needs at least one active admin.")
    if user.is_superuser and role != Role.ADMIN:
        raise ValidationError("A superuser is always an admin.")
    before = user.role
    user.role = role
    user.save(update_fields=["role"])
    _audit(
        action=AuditEvent.Action.USER_ROLE_CHANGED,
        actor=actor,
        target=user.get_username(),
        before=before,
        after=role.value,
    )
    return user


@transaction.atomic
def user_set_active(*, user: User, active: bool, actor: User) -> User:
    user = User.objects.select_for_update().get(pk=user.pk)
    if user.is_active == active:
        return user
    if not active and user.role == Role.ADMIN and _active_admins_besides(user) == 0:
        raise ValidationError("The console needs at least one active admin.")
    user.is_active = active
    user.save(update_fields=["is_active"])
    _audit(
        action=(
            AuditEvent.Action.USER_REACTIVATED if active else AuditEvent.Action.USER_DEACTIVATED
        ),
        actor=actor,
        target=user.get_username(),
    )
    return user


def first_admin_ensure(*, username: str = "admin") -> tuple[User, str] | None:
    """Create the first admin when the console has none; return it with its password."""
    with transaction.atomic():
        if User.objects.filter(is_active=True, role=Role.ADMIN).exists():
            return None
        password = secrets.token_urlsafe(18)
        user = User.objects.create_superuser(username=username, email="", password=password)
        _audit(action=AuditEvent.Action.USER_CREATED, actor=None, target=username, after="admin")
    return user, password


def auth_records_prune() -> dict[str, int]:
    """Delete expired sessions, login failures past their cool-off and old login logs."""
    from axes.models import AccessAttempt, AccessFailureLog, AccessLog
    from django.conf import settings
    from django.contrib.sessions.models import Session

    now = timezone.now()
    log_cutoff = now - timedelta(days=settings.ASM_AUTH_LOG_RETENTION_DAYS)
    deleted = {
        "sessions": Session.objects.filter(expire_date__lt=now).delete()[0],
        "login_attempts": AccessAttempt.objects.filter(
            attempt_time__lt=now - settings.AXES_COOLOFF_TIME
        ).delete()[0],
        "login_logs": AccessLog.objects.filter(attempt_time__lt=log_cutoff).delete()[0],
        "login_failure_logs": AccessFailureLog.objects.filter(attempt_time__lt=log_cutoff).delete()[
            0
        ],
    }
    return deleted
