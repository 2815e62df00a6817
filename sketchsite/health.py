"""GET /healthz: is this process ready to answer searches (database reachable, extractor loaded)?"""

from __future__ import annotations

from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse


def healthz(request: HttpRequest) -> JsonResponse:
    from indexing.selectors import index_get_active
    from indexing.services.backbones import extractor_is_loaded

    body: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        body["database"] = "ok"
        active = index_get_active()
    except DatabaseError as exc:
        connection.close_if_unusable_or_obsolete()
        return JsonResponse({"database": f"unavailable: {exc.__class__.__name__}"}, status=503)
    body["index"] = str(active) if active else "none"
    # The model is loaded at process start by the gunicorn/celery warm-up hooks (docker/gunicorn.conf.py).
    body["model"] = "ready" if active is not None and extractor_is_loaded(active.extractor) else "not loaded"
    ready = active is not None and body["model"] == "ready"
    return JsonResponse(body, status=200 if ready else 503)
