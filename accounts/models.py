from __future__ import annotations

from typing import Any, ClassVar

from django.contrib.auth.models import AbstractUser
from django.contrib.auth.models import UserManager as DjangoUserManager
from django.db import models
from django.db.models import Q


class Role(models.TextChoices):
    """What a person may do. Each role includes the ones below it."""

    VIEWER = "viewer", "Viewer"
    MEMBER = "member", "Member"
    ADMIN = "admin", "Admin"

    @property
    def rank(self) -> int:
        return _ROLE_RANK[self]

    @property
    def description(self) -> str:
        return _ROLE_DESCRIPTION[self]


_ROLE_RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2}
_ROLE_DESCRIPTION = {
    Role.VIEWER: "reads everything, changes nothing",
    Role.MEMBER: "also triages: assigns, archives, passlists, blocks",
    Role.ADMIN: "also manages users, API keys and settings",
}


class UserManager(DjangoUserManager["User"]):
    def create_superuser(
        self, username: str, email: str | None = None, password: str | None = None, **extra: Any
    ) -> User:
        extra.setdefault("role", Role.ADMIN)
        return super().create_superuser(username, email, password, **extra)


class User(AbstractUser):
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)

    objects: ClassVar[UserManager] = UserManager()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(is_superuser=False) | Q(role=Role.ADMIN),
                name="accounts_user_superuser_is_admin",
            ),
            models.CheckConstraint(
                condition=Q(role__in=Role.values), name="accounts_user_role_valid"
            ),
        ]

    def has_role(self, role: Role) -> bool:
        return self.is_active and Role(self.role).rank >= role.rank


class APIKeyScope(models.TextChoices):
    INTAKE = "intake", "Intake: send traces and telemetry"
    READ = "read", "Read: query the REST API"
    WRITE = "write", "Write: triage through the REST API"


class APIKey(models.Model):
    """A credential for tracers and REST clients. Only a hash of the key is stored."""

    name = models.CharField(max_length=100)
    # The public part of the key, shown in lists so that a leaked key can be recognised.
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    scopes = models.JSONField(default=list)
    created_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def has_scope(self, scope: APIKeyScope) -> bool:
        return self.is_active and scope.value in self.scopes


class AuditEvent(models.Model):
    """Who changed an account or a credential, and how. Append-only."""

    class Action(models.TextChoices):
        API_KEY_CREATED = "api_key_created", "API key created"
        API_KEY_REVOKED = "api_key_revoked", "API key revoked"
        USER_CREATED = "user_created", "User created"
        USER_ROLE_CHANGED = "user_role_changed", "Role changed"
        USER_DEACTIVATED = "user_deactivated", "User deactivated"
        USER_REACTIVATED = "user_reactivated", "User reactivated"

    action = models.CharField(max_length=32, choices=Action.choices)
    actor = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Kept as text so the record survives the deletion of what it describes.
    actor_name = models.CharField(max_length=150)
    target = models.CharField(max_length=200)
    before = models.CharField(max_length=64, blank=True)
    after = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.actor_name} {self.get_action_display()} {self.target}"
