"""Serve stored collection images, in development and in production, with a safe content type.

The files are user-imported: never let the browser guess a type (nosniff), serve only image types inline,
and anything else as an attachment. Only the folders in SERVED_FOLDERS are served (trained weights and
anything else under MEDIA_ROOT are not): the path is resolved first (``..``, ``%2e%2e``, symlinks), and the
folder check is made on where it really points. Every refusal is the same bare 404, whether or not a file
exists there, so the answer never tells what MEDIA_ROOT holds.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponseNotFound
from django.http.response import HttpResponseBase
from django.views.decorators.http import require_GET
from django.views.static import serve

SAFE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
              ".webp": "image/webp", ".bmp": "image/bmp"}  # fmt: skip
SERVED_FOLDERS = ("collections", "evaluations")


def _not_found() -> HttpResponseNotFound:
    return HttpResponseNotFound(b"not found", content_type="text/plain")


def served_path(path: str) -> str | None:
    """The path relative to MEDIA_ROOT when it resolves to a file inside a served folder, else None."""
    root = Path(settings.MEDIA_ROOT)
    try:
        root = root.resolve()
        target = (root / path).resolve()
    except (OSError, ValueError):  # a NUL byte, a symlink loop, a name too long
        return None
    for folder in SERVED_FOLDERS:
        if target.is_relative_to(root / folder) and target != root / folder:
            return target.relative_to(root).as_posix()
    return None


@require_GET
def media(request: HttpRequest, path: str) -> HttpResponseBase:
    relative = served_path(path)
    if relative is None:
        return _not_found()
    try:
        response = serve(request, relative, document_root=str(settings.MEDIA_ROOT))
    except Http404:
        return _not_found()
    content_type = SAFE_TYPES.get(PurePosixPath(relative).suffix.lower())
    if content_type is None:
        response["Content-Type"] = "application/octet-stream"
        response["Content-Disposition"] = "attachment"
    else:
        response["Content-Type"] = content_type
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "public, max-age=86400, immutable"  # stored by sha256: a name never changes content
    return response
