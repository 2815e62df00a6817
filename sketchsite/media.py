"""Serve stored collection images, in development and in production, with a safe content type.

The files are user-imported: never let the browser guess a type (nosniff), serve only image types inline,
and anything else as an attachment. Path traversal is refused by django.views.static.serve's safe_join.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from django.conf import settings
from django.http import Http404, HttpRequest
from django.http.response import HttpResponseBase
from django.views.decorators.http import require_GET
from django.views.static import serve

SAFE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
              ".webp": "image/webp", ".bmp": "image/bmp"}  # fmt: skip
SERVED_FOLDERS = ("collections/", "evaluations/")


@require_GET
def media(request: HttpRequest, path: str) -> HttpResponseBase:
    if not path.startswith(SERVED_FOLDERS):
        raise Http404("not a served media folder")
    response = serve(request, path, document_root=str(settings.MEDIA_ROOT))
    content_type = SAFE_TYPES.get(PurePosixPath(path).suffix.lower())
    if content_type is None:
        response["Content-Type"] = "application/octet-stream"
        response["Content-Disposition"] = "attachment"
    else:
        response["Content-Type"] = content_type
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "public, max-age=86400, immutable"  # stored by sha256: a name never changes content
    return response
