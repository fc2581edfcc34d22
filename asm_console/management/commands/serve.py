"""`manage.py serve`: the whole console in one process.

The web server (waitress) answers in its own threads, the Celery beat scheduler runs in a
thread, and a Celery worker runs in the main thread, where it can handle Ctrl-C and SIGTERM
with a warm shutdown. With the embedded default they share SQLite and the filesystem broker
in ASM_DATA_DIR; with DATABASE_URL and CELERY_BROKER_URL set they use those instead.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from celery.beat import EmbeddedService
from celery.signals import worker_ready
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser
from waitress.server import create_server

from accounts.services import first_admin_ensure
from asm_console.celery import app as celery_app
from asm_console.wsgi import application

logger = logging.getLogger(__name__)

_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _release_stop_signals(**kwargs: Any) -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


class Command(BaseCommand):
    help = (
        "Migrate, create the first admin if there is none, and serve the console with an "
        "in-process worker and scheduler."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
        )
        parser.add_argument(
            "--port", type=int, default=8000, help="port to listen on (default 8000)"
        )
        parser.add_argument("--threads", type=int, default=8, help="web server threads (default 8)")
        parser.add_argument(
            "--concurrency",
            type=int,
            default=2,
            help="worker threads for background tasks (default 2)",
        )

    def handle(
        self, *args: Any, host: str, port: int, threads: int, concurrency: int, **options: Any
    ) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        created = first_admin_ensure()
        if created is not None:
            user, password = created
            self.stdout.write(
                self.style.WARNING(
                    "Created the first admin account. Its password is shown only this once:\n"
                    f"    username: {user.get_username()}\n"
                    f"    password: {password}\n"
                    "Sign in and change it under Settings → Change password."
                )
            )

        # Ctrl-C or SIGTERM while the worker is still starting interrupts Celery half-way and
        # hangs its shutdown. Hold both signals until the worker is ready: its own handlers
        # then receive any that arrived meanwhile and stop it warmly. Threads started below
        # inherit the mask, so the signals can only reach the main thread.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        worker_ready.connect(_release_stop_signals, weak=False)

        server = create_server(
            application, host=host, port=port, threads=threads, ident="asm-console"
        )
        web = threading.Thread(target=server.run, name="web", daemon=True)
        web.start()
        # Beat sleeps between ticks without listening for a stop; a short maximum interval
        # bounds how long shutdown waits for it to save the schedule.
        beat = EmbeddedService(
            celery_app,
            thread=True,
            max_interval=2,
            schedule_filename=settings.CELERY_BEAT_SCHEDULE_FILENAME,
        )
        beat.start()  # type: ignore[union-attr]  # thread=True makes it a thread
        bound_port = getattr(server, "effective_port", port)
        self.stdout.write(f"ASM Console is serving at http://{host}:{bound_port}/ (Ctrl-C to stop)")
        self.stdout.flush()
        try:
            worker = celery_app.Worker(
                pool="threads",
                concurrency=concurrency,
                loglevel=settings.LOG_LEVEL,
                quiet=True,
                hostname=f"embedded@{host}:{port}",
            )
            worker.start()
        finally:
            beat.stop()
            server.close()
            self.stdout.write("ASM Console stopped.")
