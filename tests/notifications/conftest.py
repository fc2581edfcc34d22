from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.notifications.support import ConnectionCounter, HTTPReceiver, SMTPServer


@pytest.fixture
def receiver(settings) -> Iterator[HTTPReceiver]:
    """A local HTTP receiver, the one loopback address and port outbound requests may reach."""
    server = HTTPReceiver()
    settings.ASM_OUTBOUND_ALLOW_TARGETS = frozenset({server.target})
    yield server
    server.close()


@pytest.fixture
def counter() -> Iterator[ConnectionCounter]:
    listener = ConnectionCounter()
    yield listener
    listener.close()


@pytest.fixture
def smtp(settings) -> Iterator[SMTPServer]:
    server = SMTPServer()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = server.port
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_USE_SSL = False
    settings.EMAIL_TIMEOUT = 5
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    yield server
    server.close()
