"""The Celery app: configuration comes from Django settings (``CELERY_*``), tasks from apps."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("ephemera")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
