import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "asm_console.settings")

app = Celery("asm_console")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
