"""gunicorn settings for the web container: sync workers, each loading the model and the index once."""

from __future__ import annotations

import os
from typing import Any

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "1"))  # the CNN forward is CPU bound: scale with processes
timeout = 60
accesslog = "-"


def post_fork(server: Any, worker: Any) -> None:
    # Warm up in each worker (not in the master: TensorFlow state does not survive fork), before traffic.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sketchsite.settings")
    import django

    django.setup()
    from indexing.serving import index_warm_up

    try:
        index_warm_up()
    except Exception as exc:  # a missing index must not keep the site down: /healthz reports it
        server.log.warning("warm-up skipped: %s", exc)
