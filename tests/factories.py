from __future__ import annotations

from typing import Any

import factory
from django.utils import timezone

from accounts.models import Role, User
from services.models import Service

PASSWORD = "correct horse battery staple"


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    role = Role.VIEWER

    @factory.post_generation
    def password(obj: User, create: bool, extracted: str | None, **kwargs: Any) -> None:
        obj.set_password(extracted or PASSWORD)
        if create:
            obj.save(update_fields=["password"])


class ServiceFactory(factory.django.DjangoModelFactory[Service]):
    class Meta:
        model = Service

    name = factory.Sequence(lambda n: f"service-{n}")
    env = "prod"
    version = "1.0.0"
    language = "python"
    tracer_version = "4.16.0"
    asm_enabled = True
    last_seen = factory.LazyFunction(timezone.now)
