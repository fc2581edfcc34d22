"""Real local receivers for the notification tests: an HTTP server that records what it
gets and answers as told, an SMTP server (aiosmtpd), and a bare listener that counts the
connections it accepts. Plus factories for signals, channels and rules."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from django.utils import timezone

from notifications.models import Channel, NotificationRule
from services.models import Service
from signals.models import Severity, Signal, SignalActivity
from tests.factories import ServiceFactory


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class HTTPReceiver:
    """A local HTTP server in a thread. Each request takes the next answer of `answers`
    (the last one repeats), and is recorded in `requests`."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.answers: list[Answer] = [Answer()]
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                receiver.requests.append(
                    Received(self.command, self.path, dict(self.headers.items()), body)
                )
                answer = receiver.answers[0]
                if len(receiver.answers) > 1:
                    receiver.answers.pop(0)
                if answer.delay:
                    time.sleep(answer.delay)
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except OSError:
                    pass  # the client gave up (a timeout test)

            do_POST = do_GET = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def target(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def answer(self, *answers: Answer) -> None:
        self.answers = list(answers)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ConnectionCounter:
    """A TCP listener on loopback that accepts and counts connections, and says nothing."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=2)
        self.sock.close()


class _Sink:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], Message]] = []
        self.refuse: str | None = None

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if self.refuse:
            return self.refuse
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        self.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(content))
        )
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SMTPServer:
    def __init__(self) -> None:
        self.sink = _Sink()
        self.port = free_port()
        self.controller = Controller(self.sink, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    @property
    def messages(self) -> list[tuple[str, list[str], Message]]:
        return self.sink.messages

    def close(self) -> None:
        self.controller.stop()


# --- factories ------------------------------------------------------------------------------


def make_signal(
    *,
    severity: str = Severity.HIGH,
    rule_id: str = "sqli-attempts",
    service: Service | None = None,
    env: str = "prod",
    title: str = "SQL injection attempts on checkout from 203.0.113.9",
    created_at_offset: timedelta | None = None,
    group: dict[str, Any] | None = None,
) -> Signal:
    now = timezone.now()
    if service is None:
        service = Service.objects.filter(name="checkout", env=env).first()
        service = service or ServiceFactory.create(name="checkout", env=env)
    signal = Signal.objects.create(
        rule_id=rule_id,
        rule_name="SQL injection attempts",
        title=title,
        severity=severity,
        group=group or {"service": service.name, "env": env, "client_ip": "203.0.113.9"},
        group_key=f"{rule_id}|{service.pk}|{Signal.objects.count()}",
        service=service,
        env=env,
        attackers={
            "ips": {
                "203.0.113.9": {"count": 120, "first_seen": "", "last_seen": ""},
                "198.51.100.4": {"count": 3, "first_seen": "", "last_seen": ""},
            },
            "users": {"alice": {"count": 2, "first_seen": "", "last_seen": ""}},
        },
        routes={"/api/orders/<id>": 100, "/login": 23},
        first_seen=now - timedelta(minutes=10),
        last_seen=now,
        event_count=123,
    )
    if created_at_offset is not None:
        Signal.objects.filter(pk=signal.pk).update(created_at=now - created_at_offset)
        signal.refresh_from_db()
    return signal


def created(signal: Signal) -> SignalActivity:
    return SignalActivity.objects.create(
        signal=signal, kind=SignalActivity.Kind.CREATED, to_value=signal.severity
    )


def escalated(signal: Signal, before: str, after: str) -> SignalActivity:
    Signal.objects.filter(pk=signal.pk).update(severity=after)
    signal.severity = after
    return SignalActivity.objects.create(
        signal=signal, kind=SignalActivity.Kind.SEVERITY_CHANGED, from_value=before, to_value=after
    )


def make_channel(kind: str = Channel.Kind.WEBHOOK, **fields: Any) -> Channel:
    defaults: dict[str, Any] = {"name": f"{kind} channel", "kind": kind}
    if kind == Channel.Kind.EMAIL:
        defaults["email_to"] = "soc@example.com, oncall@example.com"
    else:
        defaults["url"] = "https://hooks.example.com/services/T000/B000/XXXX"
    if kind == Channel.Kind.WEBHOOK:
        defaults["secret"] = "whsec_test_secret"
    return Channel.objects.create(**{**defaults, **fields})


def make_rule(*channels: Channel, **fields: Any) -> NotificationRule:
    rule = NotificationRule.objects.create(name=fields.pop("name", "Everything"), **fields)
    rule.channels.set(channels)
    return rule
