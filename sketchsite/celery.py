"""Celery application (copied in shape from cookiecutter-django's config/celery_app.py).

With no CELERY_BROKER_URL the settings switch tasks to eager mode, so the embedded default needs no
broker; with CELERY_BROKER_URL=redis://... a real worker runs them:

    celery -A sketchsite worker -l info
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sketchsite.settings")

app = Celery("sketchsite")
# Every CELERY_* Django setting configures Celery (CELERY_BROKER_URL -> broker_url, ...).
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
