"""What every API of the site shares: JSON errors with a message, and their schema (one place for all apps).

Every view answers errors as JSON ``{"error": "<message>"}`` (plus ``"fields"`` for validation errors) through
``json_exception_handler``, registered as ``REST_FRAMEWORK["EXCEPTION_HANDLER"]`` and installed by
:class:`JsonErrorsMixin` on each view whatever the settings say.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db import InterfaceError, OperationalError, connection
from django.http import Http404
from drf_spectacular.utils import inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from indexing.features.preprocess import ImageDecodeError
from indexing.services.search import SearchError
from search.uploads import QueryImageTooLarge, query_max_bytes, too_large_message

MAX_ROW_ID = 2**63 - 1  # the largest id a database row can have (BIGINT): larger ones get a 400, not a 500


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "the query image is too large"
    default_code = "too_large"


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "the search is not available"
    default_code = "unavailable"


def _first_message(detail: Any) -> str:
    """The first human message inside a DRF error detail (str, list or dict, nested)."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            message = _first_message(value)
            return message if key == "non_field_errors" else f"{key}: {message}"
        return "invalid input"
    if isinstance(detail, list):
        return _first_message(detail[0]) if detail else "invalid input"
    return str(detail)


def json_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF exception handler: every error is JSON ``{"error": message}``; validation errors add ``"fields"``.

    A query the search cannot answer (SearchError) or an image that cannot be decoded (ImageDecodeError)
    is the client's input, so 400; a body over Django's DATA_UPLOAD_MAX_MEMORY_SIZE is 413. Anything
    else returns None, and Django answers 500 as for any bug.
    """
    if isinstance(exc, SearchError | ImageDecodeError):
        return _error_response(str(exc), status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, OperationalError | InterfaceError):
        # The database is down or restarting: a transient server state, not a bug. The next request reconnects
        # (CONN_HEALTH_CHECKS), so say so instead of answering 500.
        connection.close_if_unusable_or_obsolete()
        return _error_response(
            "the database is unavailable, try again in a moment", status.HTTP_503_SERVICE_UNAVAILABLE
        )
    if isinstance(exc, QueryImageTooLarge):  # a multipart upload over the limit (search.uploads)
        return _error_response(str(exc), status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, RequestDataTooBig):  # a body over DATA_UPLOAD_MAX_MEMORY_SIZE, refused by Django unread
        what = f"the request body is over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes"
        return _error_response(too_large_message(what, query_max_bytes()), status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(*exc.args)
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(*exc.args)
    if not isinstance(exc, exceptions.APIException):
        return None
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = str(exc.auth_header)  # type: ignore[attr-defined]
    if getattr(exc, "wait", None):
        headers["Retry-After"] = f"{int(exc.wait)}"  # type: ignore[attr-defined]
    data: dict[str, Any] = {"error": _first_message(exc.detail)}
    if isinstance(exc, exceptions.ValidationError) and isinstance(exc.detail, dict):
        data["fields"] = exc.detail
    set_rollback()
    return Response(data, status=exc.status_code, headers=headers)


def _error_response(message: str, code: int) -> Response:
    set_rollback()
    return Response({"error": message}, status=code)


class JsonErrorsMixin:
    """Install json_exception_handler on a view, whatever REST_FRAMEWORK's EXCEPTION_HANDLER says."""

    def get_exception_handler(self) -> Any:
        return json_exception_handler


# "fields" is also a Serializer attribute, so the schema's error shape is declared inline.
ErrorSerializer = inline_serializer(
    name="Error",
    fields={
        "error": serializers.CharField(),
        "fields": serializers.DictField(required=False, help_text="per-field messages, for invalid input"),
    },
)
