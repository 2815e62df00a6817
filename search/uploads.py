"""The query-size guard for multipart uploads: every query image over the limit is a 413, whatever its size.

Django's upload handlers drop a file they do not take: with only the in-memory handler installed (query images are
never written to disk), a request over FILE_UPLOAD_MAX_MEMORY_SIZE reached the view without its file, and the search
answered 400 "give exactly one of image and image_id" instead of 413. This handler runs first and refuses the
request as soon as its Content-Length passes the largest body a search needs, or a file part passes the limit.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.files.uploadhandler import FileUploadHandler

DEFAULT_QUERY_MAX_BYTES = 5 * 1024 * 1024


def query_max_bytes() -> int:
    return int(getattr(settings, "SKETCHSEARCH_QUERY_MAX_BYTES", DEFAULT_QUERY_MAX_BYTES))


def too_large_message(what: str, limit: int) -> str:
    return f"image too large: {what}, the limit is {limit} bytes ({limit / 2**20:.1f} MB)"


class QueryImageTooLarge(RequestDataTooBig):
    """A query upload over SKETCHSEARCH_QUERY_MAX_BYTES; the API answers 413 with this message."""


class QuerySizeLimitUploadHandler(FileUploadHandler):
    """First of FILE_UPLOAD_HANDLERS: raises QueryImageTooLarge for a body or a file over the query limit."""

    def handle_raw_input(
        self,
        input_data: Any,
        META: dict[str, Any],  # noqa: N803 - Django's name for it
        content_length: int,
        boundary: Any,
        encoding: str | None = None,
    ) -> None:
        # The largest body a search needs is a data URL of an image at the limit, which DATA_UPLOAD_MAX_MEMORY_SIZE
        # allows (settings): a larger one is refused before a byte of it is read. A file part between the two
        # limits is caught by receive_data_chunk.
        body_limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if body_limit is not None and content_length > body_limit:
            raise QueryImageTooLarge(too_large_message(f"the request is {content_length} bytes", query_max_bytes()))

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        limit = query_max_bytes()
        if start + len(raw_data) > limit:  # a chunked request, or one whose Content-Length understates the body
            raise QueryImageTooLarge(too_large_message(f"the file is over {limit} bytes", limit))
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None  # the next handler (in memory, or on disk if configured) builds the file
