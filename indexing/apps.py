from __future__ import annotations

import logging
import threading

from django.apps import AppConfig
from django.conf import settings

logger = logging.getLogger(__name__)


class IndexingConfig(AppConfig):
    name = "indexing"
    verbose_name = "Collections and index"

    def ready(self) -> None:
        # `make run` sets SKETCHSEARCH_WARM_UP_ON_START for runserver only: the active index and its CNN load in
        # the background while the server starts, so a newcomer's first stroke does not wait ~5 s for them
        # (gunicorn warms each worker in docker/gunicorn.conf.py's post_fork instead).
        if settings.SKETCHSEARCH_WARM_UP_ON_START:
            threading.Thread(target=_warm_up, name="sketchsearch-warm-up", daemon=True).start()


def _warm_up() -> None:
    from django.db import connection

    from indexing.serving import index_warm_up

    try:
        index_warm_up()
    except Exception:  # a missing index or database must not stop the server: /healthz reports it
        logger.warning("warm-up at start skipped", exc_info=True)
    finally:
        connection.close()
